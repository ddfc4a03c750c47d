package kubelet

import (
	"context"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

func (k *Kubelet) ensureStorageClass(ctx context.Context) error {
	sc := &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: k.opts.StorageClass},
		Provisioner:       "openbao-restore.io/harness-kubelet",
		ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimRetain),
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}
	_, err := k.cs.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// claimDir is the directory of a claim's volume; it outlives pods.
func (k *Kubelet) claimDir(namespace, name string, uid types.UID) string {
	return filepath.Join(k.dir, "volumes", namespace+"_"+name+"_"+string(uid))
}

// claimChanged binds an unbound claim of our class to a new volume pinned
// to our node, writing both sides as the PV controller would.
func (k *Kubelet) claimChanged(o any) {
	pvc, ok := o.(*corev1.PersistentVolumeClaim)
	if !ok || pvc.Spec.VolumeName != "" || pvc.DeletionTimestamp != nil ||
		ptr.Deref(pvc.Spec.StorageClassName, "") != k.opts.StorageClass {
		return
	}
	if err := k.bindClaim(pvc); err != nil && k.ctx.Err() == nil {
		k.logf("bind claim %s/%s: %v", pvc.Namespace, pvc.Name, err)
	}
}

func (k *Kubelet) bindClaim(pvc *corev1.PersistentVolumeClaim) error {
	ctx := k.ctx
	dir := k.claimDir(pvc.Namespace, pvc.Name, pvc.UID)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if size.IsZero() {
		size = resource.MustParse("1Gi")
	}
	modes := pvc.Spec.AccessModes
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	pvName := "harness-" + string(pvc.UID)
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName, Annotations: map[string]string{
			"pv.kubernetes.io/provisioned-by": "openbao-restore.io/harness-kubelet", "pv.kubernetes.io/bound-by-controller": "yes"}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   modes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              k.opts.StorageClass,
			VolumeMode:                    pvc.Spec.VolumeMode,
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID},
			PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: dir}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname",
					Operator: corev1.NodeSelectorOpIn, Values: []string{k.opts.Node}}},
			}}}},
		},
	}
	got, err := k.cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = k.cs.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
	}
	if err != nil {
		return err
	}
	if got.Status.Phase != corev1.VolumeBound {
		got.Status.Phase = corev1.VolumeBound
		if _, err := k.cs.CoreV1().PersistentVolumes().UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	claims := k.cs.CoreV1().PersistentVolumeClaims(pvc.Namespace)
	c, err := claims.Get(ctx, pvc.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if c.UID != pvc.UID || c.Spec.VolumeName != "" {
		return nil
	}
	c.Spec.VolumeName = pvName
	if c.Annotations == nil {
		c.Annotations = map[string]string{}
	}
	c.Annotations["pv.kubernetes.io/bind-completed"] = "yes"
	c.Annotations["pv.kubernetes.io/bound-by-controller"] = "yes"
	if c, err = claims.Update(ctx, c, metav1.UpdateOptions{}); err != nil {
		return err
	}
	c.Status.Phase = corev1.ClaimBound
	c.Status.AccessModes = modes
	c.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: size}
	_, err = claims.UpdateStatus(ctx, c, metav1.UpdateOptions{})
	return err
}
