package fn

import (
	"slices"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// stepDownDeadline bounds the step-down Job; the reconciler's own wait
// (its --step-down-timeout) is the one that matters.
const stepDownDeadline = 180

// StepDownJob is the Job that asks the leader, r.StepDownPod, to step down
// before the reconciler restarts its pod: the restore Job's executor, pod
// and credentials for OpenBao, in step-down mode, without the store's
// credentials (it reads no snapshot) and without the lock request (it
// records nothing). Labelled schemas.LabelJobRole=step-down, so that the
// reconciler never takes it for the restore Job.
func StepDownJob(r Restore, spec *schemas.Spec, c *Cluster, auth schemas.Auth, set Settings, n Names) *batchv1.Job {
	j := Job(r, spec, c, Plan{Auth: auth}, set, n)
	j.Name = n.StepDown
	j.Labels[schemas.LabelJobRole] = schemas.JobRoleStepDown
	j.Spec.Template.Labels[schemas.LabelJobRole] = schemas.JobRoleStepDown
	j.Spec.BackoffLimit = ptr.To(int32(0))
	j.Spec.ActiveDeadlineSeconds = ptr.To(int64(stepDownDeadline))
	j.Spec.PodFailurePolicy = nil
	pod := &j.Spec.Template.Spec
	ctr := &pod.Containers[0]
	ctr.Name = "step-down"
	var env []corev1.EnvVar
	for _, e := range ctr.Env {
		switch e.Name {
		case schemas.EnvExecutorMode:
			e.Value = schemas.ModeStepDown
		case schemas.EnvLockRequestName:
			continue
		}
		env = append(env, e)
	}
	ctr.Env = append(env, corev1.EnvVar{Name: schemas.EnvStepDownPod, Value: r.StepDownPod})
	ctr.VolumeMounts = slices.DeleteFunc(ctr.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == storageCredentials })
	pod.Volumes = slices.DeleteFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == storageCredentials })
	return j
}
