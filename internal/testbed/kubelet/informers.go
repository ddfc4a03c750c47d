package kubelet

import (
	"context"
	"errors"
	"os"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// refreshHosts rewrites the /etc/hosts file of every pod that has one (and
// creates self's): localhost, the pod's own names, then the names of every
// other pod of this kubelet that has a subdomain, standing in for cluster
// DNS (<pod>.<service>.<namespace>.svc.cluster.local resolves in a
// StatefulSet's pods). Files are rewritten in place, so running processes
// see the change (Go's resolver rereads the file within 5 s). It returns
// the error of writing self's file.
func (k *Kubelet) refreshHosts(self *podWorker) error {
	k.hostsMu.Lock()
	defer k.hostsMu.Unlock()
	k.mu.Lock()
	workers := make([]*podWorker, 0, len(k.pods))
	for _, w := range k.pods {
		workers = append(workers, w)
	}
	k.mu.Unlock()
	entries := map[*podWorker]string{}
	var peers []string
	for _, w := range workers {
		e := w.hostsEntry()
		entries[w] = e
		if e != "" && w.latest().Spec.Subdomain != "" {
			peers = append(peers, e)
		}
	}
	sort.Strings(peers)
	var selfErr error
	for _, w := range workers {
		own := entries[w]
		if own == "" {
			continue
		}
		if _, err := os.Stat(w.hostsFile()); err != nil && w != self {
			continue // not set up yet, or already gone
		}
		var sb strings.Builder
		sb.WriteString("# Kubernetes-managed hosts file (harness kubelet).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
		sb.WriteString(own)
		for _, p := range peers {
			if p != own {
				sb.WriteString(p)
			}
		}
		err := os.MkdirAll(w.dir, 0o755)
		if err == nil {
			err = os.WriteFile(w.hostsFile(), []byte(sb.String()), 0o644)
		}
		if w == self {
			selfErr = err
		}
	}
	return selfErr
}

func (k *Kubelet) startInformers(ctx context.Context) error {
	pf := informers.NewSharedInformerFactoryWithOptions(k.cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", k.opts.Node).String()
	}))
	pods := pf.Core().V1().Pods().Informer()
	if _, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { k.podChanged(o) },
		UpdateFunc: func(_, o any) { k.podChanged(o) },
		DeleteFunc: func(o any) { k.podGone(o) },
	}); err != nil {
		return err
	}
	cf := informers.NewSharedInformerFactory(k.cs, 0)
	claims := cf.Core().V1().PersistentVolumeClaims().Informer()
	if _, err := claims.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { k.claimChanged(o) },
		UpdateFunc: func(_, o any) { k.claimChanged(o) },
	}); err != nil {
		return err
	}
	pf.Start(k.ctx.Done())
	cf.Start(k.ctx.Done())
	k.wg.Add(1)
	go func() { defer k.wg.Done(); <-k.ctx.Done(); pf.Shutdown(); cf.Shutdown() }()
	if !cache.WaitForCacheSync(ctx.Done(), pods.HasSynced, claims.HasSynced) {
		return errors.New("informers did not sync")
	}
	return nil
}

func (k *Kubelet) podChanged(o any) {
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	w := k.pods[pod.UID]
	if w == nil {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			k.mu.Unlock()
			// Finished before we saw it (an earlier kubelet): nothing runs,
			// but a deletion still needs the kubelet's final delete.
			if pod.DeletionTimestamp != nil {
				uid := pod.UID
				_ = k.cs.CoreV1().Pods(pod.Namespace).Delete(k.ctx, pod.Name, metav1.DeleteOptions{
					GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &uid}})
			}
			return
		}
		w = newPodWorker(k, pod)
		k.pods[pod.UID] = w
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			w.run()
			k.mu.Lock()
			delete(k.pods, pod.UID)
			k.mu.Unlock()
			_ = k.refreshHosts(nil)
		}()
	}
	k.mu.Unlock()
	w.update(pod)
}

func (k *Kubelet) podGone(o any) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	w := k.pods[pod.UID]
	k.mu.Unlock()
	if w != nil {
		w.gone()
	}
}
