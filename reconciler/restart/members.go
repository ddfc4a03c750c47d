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

	"github.com/openbao-restore/openbao-restore/schemas"
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

// Members reads the cluster's voter StatefulSet (named after the cluster,
// or after its blue revision while a blue/green upgrade has moved the
// voters, as openbao-operator names it), its read-replica StatefulSet if
// it has one, their pods, and probes the health of every Ready pod, in
// parallel, verifying https answers with tl if set. watched says they all came from the member cache, whose
// changes wake the restart; otherwise some came from the API, and only
// polling sees them change.
func (g Gatherer) Members(ctx context.Context, ns, cluster, blueRevision, scheme string, tl *TLS) (m *Members, watched bool, err error) {
	m = &Members{StatefulSet: schemas.VoterStatefulSet(cluster, blueRevision)}
	_, found, watched, err := g.statefulSet(ctx, ns, m.StatefulSet, m)
	if err == nil && !found && blueRevision != "" {
		// A status that still names a blue revision after the voters
		// moved back: the plain name is the other place they can be.
		m.StatefulSet = cluster
		_, found, watched, err = g.statefulSet(ctx, ns, m.StatefulSet, m)
	}
	if err != nil || !found {
		m.Missing = !found
		return m, watched, err
	}
	readSet := schemas.ReadReplicaStatefulSet(cluster)
	_, found, readWatched, err := g.statefulSet(ctx, ns, readSet, m)
	if err != nil {
		return nil, false, err
	}
	if found {
		m.ReadReplicas = readSet
		watched = watched && readWatched
	}
	var wg sync.WaitGroup
	for i := range m.Pods {
		mb := &m.Pods[i]
		if mb.Health.Err != "" {
			continue
		}
		wg.Go(func() {
			mb.Health = g.Prober.Probe(ctx, Target{Scheme: scheme, IP: mb.IP, Name: mb.Name, Namespace: ns, Cluster: cluster,
				Ordinal: mb.Ordinal, ReadReplica: mb.ReadReplica, TLS: tl})
		})
	}
	wg.Wait()
	return m, watched, nil
}

// statefulSet reads one StatefulSet and adds its desired replicas and its
// pods to m (read replicas if it is not m's voter set). found is false if
// it does not exist; watched says it came from the member cache.
func (g Gatherer) statefulSet(ctx context.Context, ns, name string, m *Members) (replicas int, found, watched bool, err error) {
	reader := g.API
	var sts appsv1.StatefulSet
	key := types.NamespacedName{Namespace: ns, Name: name}
	if g.Cache != nil {
		if err := g.Cache.Get(ctx, key, &sts); err == nil {
			reader, watched = g.Cache, true
		} else if !apierrors.IsNotFound(err) {
			return 0, false, false, err
		}
	}
	if !watched {
		// Not labelled schemas.LabelOperatorCluster, or really missing: ask the API.
		if err := g.API.Get(ctx, key, &sts); err != nil {
			return 0, false, false, client.IgnoreNotFound(err)
		}
	}
	replicas = 1
	if sts.Spec.Replicas != nil {
		replicas = int(*sts.Spec.Replicas)
	}
	m.Replicas += replicas
	sel, err := metav1.LabelSelectorAsSelector(sts.Spec.Selector)
	if err != nil {
		return 0, false, false, fmt.Errorf("StatefulSet %s/%s selector: %w", ns, name, err)
	}
	var pods corev1.PodList
	if err := reader.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return 0, false, false, err
	}
	for _, p := range pods.Items {
		if ref := metav1.GetControllerOf(&p); ref == nil || ref.UID != sts.UID {
			continue
		}
		mb := Member{Name: p.Name, UID: string(p.UID), ResourceVersion: p.ResourceVersion, IP: p.Status.PodIP,
			Terminating: p.DeletionTimestamp != nil, Ordinal: -1, ReadReplica: name != m.StatefulSet}
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
	return replicas, true, watched, nil
}
