package restart

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Gatherer reads what Step decides from: a cluster's StatefulSet, its pods
// and their health.
type Gatherer struct {
	// Cache, if set, is a cache of the StatefulSets and pods labelled
	// schemas.LabelOperatorCluster; its changes wake the restart.
	Cache client.Reader
	// API reads what the cache does not hold.
	API    client.Reader
	Prober *Prober
}

// Members reads the cluster's StatefulSet (named after the cluster, as
// openbao-operator names it) and its pods, and probes the health of every
// Ready pod, in parallel. watched says they came from the member cache,
// whose changes wake the restart; otherwise they came from the API, and
// only polling sees them change.
func (g Gatherer) Members(ctx context.Context, ns, cluster, scheme string) (m *Members, watched bool, err error) {
	m = &Members{StatefulSet: cluster}
	reader := g.API
	var sts appsv1.StatefulSet
	key := types.NamespacedName{Namespace: ns, Name: cluster}
	if g.Cache != nil {
		if err := g.Cache.Get(ctx, key, &sts); err == nil {
			reader, watched = g.Cache, true
		} else if !apierrors.IsNotFound(err) {
			return nil, false, err
		}
	}
	if !watched {
		// Not labelled schemas.LabelOperatorCluster, or really missing: ask the API.
		if err := g.API.Get(ctx, key, &sts); err != nil {
			if apierrors.IsNotFound(err) {
				m.Missing = true
				return m, false, nil
			}
			return nil, false, err
		}
	}
	m.Replicas = 1
	if sts.Spec.Replicas != nil {
		m.Replicas = int(*sts.Spec.Replicas)
	}
	sel, err := metav1.LabelSelectorAsSelector(sts.Spec.Selector)
	if err != nil {
		return nil, false, fmt.Errorf("StatefulSet %s/%s selector: %w", ns, cluster, err)
	}
	var pods corev1.PodList
	if err := reader.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, false, err
	}
	for _, p := range pods.Items {
		if ref := metav1.GetControllerOf(&p); ref == nil || ref.UID != sts.UID {
			continue
		}
		mb := Member{Name: p.Name, UID: string(p.UID), ResourceVersion: p.ResourceVersion, IP: p.Status.PodIP,
			Terminating: p.DeletionTimestamp != nil, Ordinal: -1}
		if i := strings.LastIndexByte(p.Name, '-'); i >= 0 {
			if n, err := strconv.Atoi(p.Name[i+1:]); err == nil {
				mb.Ordinal = n
			}
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				mb.Ready = true
			}
		}
		if !mb.Ready || mb.Terminating {
			mb.Health.Err = "not probed: the pod is not Ready"
		}
		m.Pods = append(m.Pods, mb)
	}
	var wg sync.WaitGroup
	for i := range m.Pods {
		mb := &m.Pods[i]
		if mb.Health.Err != "" {
			continue
		}
		wg.Go(func() {
			mb.Health = g.Prober.Probe(ctx, Target{Scheme: scheme, IP: mb.IP, Name: mb.Name, Namespace: ns, Cluster: cluster, Ordinal: mb.Ordinal})
		})
	}
	wg.Wait()
	return m, watched, nil
}
