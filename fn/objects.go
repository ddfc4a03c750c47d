package fn

import (
	"cmp"
	"strconv"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/openbao-restore/openbao-restore/input/v1beta1"
	"github.com/openbao-restore/openbao-restore/schemas"
	lockv1 "github.com/openbao-restore/openbao-restore/schemas/lock/v1alpha1"
)

// Names of a restore's composed objects, derived from the XR's name (unique
// per XR, so two restores never collide).
type Names struct {
	ServiceAccount, Role, RoleBinding, Lock, Job, StepDown string
}

// NamesFor derives the composed objects' names from the XR's name.
func NamesFor(xr string) Names {
	return Names{
		ServiceAccount: name(xr, "executor"),
		Role:           name(xr, "executor"),
		RoleBinding:    name(xr, "executor"),
		Lock:           name(xr, "lock"),
		Job:            name(xr, "restore"),
		StepDown:       name(xr, "step-down"),
	}
}

// Settings are the Input's knobs with every default applied.
type Settings struct {
	Image                   string
	AllowedImages           []string
	BackoffLimit            int32
	ActiveDeadlineSeconds   int64
	TTLSecondsAfterFinished int32
	Resources               corev1.ResourceRequirements
	PodSecurity             string
	AllowInsecureEndpoints  bool
	// SafetySnapshot is the default of spec.safetySnapshot.
	SafetySnapshot string
	// RestoreComposition is the Composition of a drill's runs.
	RestoreComposition string
}

// SettingsFrom applies the defaults to an Input.
func SettingsFrom(in *v1beta1.Input) Settings {
	s := Settings{
		Image:                   v1beta1.DefaultExecutorImage,
		BackoffLimit:            v1beta1.DefaultBackoffLimit,
		ActiveDeadlineSeconds:   v1beta1.DefaultActiveDeadlineSeconds,
		TTLSecondsAfterFinished: v1beta1.DefaultTTLSecondsAfterFinished,
		PodSecurity:             v1beta1.PodSecurityPinned,
		SafetySnapshot:          schemas.SafetyRequired,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("512Mi")},
		},
	}
	if in == nil {
		return s
	}
	if in.ExecutorImage != "" {
		s.Image = in.ExecutorImage
	}
	s.AllowedImages = in.AllowedImages
	if in.BackoffLimit != nil {
		s.BackoffLimit = *in.BackoffLimit
	}
	if in.ActiveDeadlineSeconds != nil {
		s.ActiveDeadlineSeconds = *in.ActiveDeadlineSeconds
	}
	if in.TTLSecondsAfterFinished != nil {
		s.TTLSecondsAfterFinished = *in.TTLSecondsAfterFinished
	}
	if in.Resources != nil {
		s.Resources = *in.Resources
	}
	if in.PodSecurity != "" {
		s.PodSecurity = in.PodSecurity
	}
	s.AllowInsecureEndpoints = in.AllowInsecureEndpoints
	if in.SafetySnapshot != "" {
		s.SafetySnapshot = in.SafetySnapshot
	}
	s.RestoreComposition = in.RestoreComposition
	return s
}

// Policy is the schema policy the settings impose.
func (s Settings) Policy() schemas.Policy {
	return schemas.Policy{
		AllowInsecureEndpoints: s.AllowInsecureEndpoints,
		AllowedImages:          append([]string{s.Image}, s.AllowedImages...),
	}
}

func meta(r Restore, cluster, n string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:      n,
		Namespace: r.Namespace,
		Labels:    map[string]string{schemas.LabelRestore: r.RequestName, schemas.LabelRestoreCluster: cluster},
	}
}

// ServiceAccount of the executor. Its token is never mounted automatically.
func ServiceAccount(r Restore, spec *schemas.Spec, n Names) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:                     metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta:                   meta(r, spec.Cluster, n.ServiceAccount),
		AutomountServiceAccountToken: ptr.To(false),
	}
}

// Role grants the executor what it needs and nothing more: finding the
// cluster's pods, reading the cluster's operation lock, and writing its
// submission record on this restore's own lock request (resourceNames).
// A dry run, which takes no lock and records nothing, only finds the pods.
func Role(r Restore, spec *schemas.Spec, n Names) *rbacv1.Role {
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
	}
	if !spec.DryRun {
		rules = append(rules,
			rbacv1.PolicyRule{APIGroups: []string{schemas.Group}, Resources: []string{schemas.LockRequestResource}, ResourceNames: []string{n.Lock}, Verbs: []string{"get"}},
			rbacv1.PolicyRule{APIGroups: []string{schemas.Group}, Resources: []string{schemas.LockRequestResource + "/status"}, ResourceNames: []string{n.Lock}, Verbs: []string{"get", "patch", "update"}},
			// The lock itself, re-read just before the snapshot's tail is sent.
			rbacv1.PolicyRule{APIGroups: []string{schemas.ClusterGroup}, Resources: []string{schemas.ClusterResource}, ResourceNames: []string{spec.Cluster}, Verbs: []string{"get"}},
		)
	}
	return &rbacv1.Role{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
		ObjectMeta: meta(r, spec.Cluster, n.Role),
		Rules:      rules,
	}
}

// RoleBinding binds the Role to the executor's ServiceAccount.
func RoleBinding(r Restore, spec *schemas.Spec, n Names) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
		ObjectMeta: meta(r, spec.Cluster, n.RoleBinding),
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: n.Role},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: n.ServiceAccount, Namespace: r.Namespace}},
	}
}

// LockRequest asks the reconciler for the cluster's operation lock.
func LockRequest(r Restore, spec *schemas.Spec, n Names) *lockv1.LockRequest {
	return &lockv1.LockRequest{
		TypeMeta:   metav1.TypeMeta{APIVersion: lockv1.GroupVersion.String(), Kind: schemas.LockRequestKind},
		ObjectMeta: meta(r, spec.Cluster, n.Lock),
		Spec: lockv1.LockRequestSpec{
			Cluster:   spec.Cluster,
			Operation: schemas.OperationRestore,
			Holder:    schemas.Holder(r.RequestName, r.UID),
			Restore: lockv1.RestoreRef{
				APIVersion: r.APIVersion, Kind: r.Kind, Name: r.Name, UID: r.UID,
				Namespace: xrNamespace(r), ClaimName: r.ClaimName,
			},
			Override: spec.Force && spec.OverrideOperationLock,
		},
	}
}

// lockOrDryRun is the lock request the executor records its submission on,
// or, for a dry run, which takes no lock and records nothing, the switch.
func lockOrDryRun(spec *schemas.Spec, n Names) corev1.EnvVar {
	if spec.DryRun {
		return corev1.EnvVar{Name: schemas.EnvDryRun, Value: "true"}
	}
	return corev1.EnvVar{Name: schemas.EnvLockRequestName, Value: n.Lock}
}

// xrNamespace is the XR's own namespace: empty for a legacy XR.
func xrNamespace(r Restore) string {
	if r.ClaimName != "" {
		return ""
	}
	return r.Namespace
}

// The exit codes the podFailurePolicy acts on.
var (
	// Only a transient failure with nothing submitted is retried.
	retryCodes = []int32{schemas.ExitTransient}
)

// Job runs the executor once the lock is held (a dry run's at once). Its environment is
// bao-backup's restore-mode contract, so openbao-operator's image also works.
// From the plan: the authentication, and for a restore with no key the
// snapshot chosen (its key, and pins where the spec sets none) or the
// executor's choice of the newest object under the path prefix.
func Job(r Restore, spec *schemas.Spec, c *Cluster, p Plan, set Settings, n Names) *batchv1.Job {
	auth, snap := p.Auth, p.Snapshot
	t := spec.Source.Target
	image := set.Image
	if spec.Image != "" {
		image = spec.Image
	}
	env := []corev1.EnvVar{
		{Name: schemas.EnvExecutorMode, Value: "restore"},
		{Name: schemas.EnvClusterName, Value: spec.Cluster},
		{Name: schemas.EnvStatefulSetName, Value: spec.Cluster},
		{Name: schemas.EnvClusterNamespace, Value: r.Namespace},
		{Name: schemas.EnvClusterReplicas, Value: strconv.FormatInt(c.Replicas, 10)},
		{Name: schemas.EnvProvider, Value: t.Provider},
		{Name: schemas.EnvEndpoint, Value: t.Endpoint},
		{Name: schemas.EnvBucket, Value: t.Bucket},
		{Name: schemas.EnvRestoreKey, Value: cmp.Or(spec.Source.Key, snap.Key)},
		{Name: schemas.EnvRestoreBucket, Value: t.Bucket},
		{Name: schemas.EnvRestoreEndpoint, Value: t.Endpoint},
		{Name: schemas.EnvRestoreForce, Value: strconv.FormatBool(spec.Force)},
		{Name: schemas.EnvInsecureSkipVerify, Value: strconv.FormatBool(t.InsecureSkipVerify)},
		{Name: schemas.EnvAuthMethod, Value: auth.Method},
		{Name: schemas.EnvRestoreRequestName, Value: r.RequestName},
		{Name: schemas.EnvRestoreRequestUID, Value: r.UID},
		lockOrDryRun(spec, n),
		{Name: schemas.EnvPodName, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: schemas.EnvPodUID, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}}},
	}
	add := func(k, v string) {
		if v != "" {
			env = append(env, corev1.EnvVar{Name: k, Value: v})
		}
	}
	switch t.Provider {
	case "s3":
		add(schemas.EnvRegion, t.Region)
		add(schemas.EnvRestoreRegion, t.Region)
		add(schemas.EnvUsePathStyle, strconv.FormatBool(t.UsePathStyle))
		add(schemas.EnvRestoreUsePathStyle, strconv.FormatBool(t.UsePathStyle))
	case "gcs":
		if t.GCS != nil {
			add(schemas.EnvGCSProject, t.GCS.Project)
		}
	case "azure":
		container := t.Bucket
		if t.Azure.Container != "" {
			container = t.Azure.Container
		}
		add(schemas.EnvAzureAccount, t.Azure.StorageAccount)
		add(schemas.EnvAzureContainer, container)
	}
	add(schemas.EnvPathPrefix, t.PathPrefix)
	if p.Newest {
		add(schemas.EnvNewestUnderPrefix, "true")
	}
	add(schemas.EnvJWTAuthRole, auth.Role)
	// The pins: the spec's, else those of the snapshot chosen for a
	// restore with no key.
	add(schemas.EnvExpectedDigest, cmp.Or(spec.Source.ExpectedDigest, snap.Digest))
	if size := cmp.Or(spec.Source.ExpectedSize, snap.Size); size > 0 {
		add(schemas.EnvExpectedSize, strconv.FormatInt(size, 10))
	}
	add(schemas.EnvExpectedClusterID, cmp.Or(spec.Source.ExpectedClusterID, snap.ClusterID))
	if spec.Fresh() {
		// A new cluster has nothing to save, and must take on the
		// snapshot's identity.
		add(schemas.EnvSafetySnapshot, schemas.SafetyOff)
		add(schemas.EnvFreshTarget, "true")
	} else {
		add(schemas.EnvSafetySnapshot, cmp.Or(spec.SafetySnapshot, set.SafetySnapshot))
	}
	add(schemas.EnvExpectedVersion, cmp.Or(spec.Source.ExpectedVersion, snap.Version))

	mounts := []corev1.VolumeMount{
		{Name: "scratch", MountPath: schemas.MountScratch},
		{Name: "kube-api", MountPath: schemas.MountKubeToken, ReadOnly: true},
	}
	vols := []corev1.Volume{
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("64Mi"))}}},
		// The executor records its submission through the Kubernetes API;
		// this is the usual ServiceAccount volume with a short-lived token.
		{Name: "kube-api", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptr.To(int32(0o444)),
			Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To(int64(3600))}},
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
			},
		}}},
	}
	if auth.Method == "jwt" {
		aud := schemas.DefaultJWTAudience
		if c != nil && c.Audience != "" {
			aud = c.Audience
		}
		mounts = append(mounts, corev1.VolumeMount{Name: "openbao-jwt", MountPath: schemas.MountJWT, ReadOnly: true})
		vols = append(vols, corev1.Volume{Name: "openbao-jwt", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "openbao-token", Audience: aud, ExpirationSeconds: ptr.To(int64(3600))}}},
		}}})
	} else {
		mounts = append(mounts, corev1.VolumeMount{Name: "openbao-token", MountPath: schemas.MountToken, ReadOnly: true})
		vols = append(vols, corev1.Volume{Name: "openbao-token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: spec.TokenSecretRef.Name, DefaultMode: ptr.To(int32(0o400)),
			Items: []corev1.KeyToPath{{Key: schemas.KeyToken, Path: "token"}},
		}}})
	}
	if t.CredentialsSecretRef != nil {
		mounts = append(mounts, corev1.VolumeMount{Name: storageCredentials, MountPath: schemas.MountCredentials, ReadOnly: true})
		vols = append(vols, corev1.Volume{Name: storageCredentials, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: t.CredentialsSecretRef.Name, DefaultMode: ptr.To(int32(0o400)),
		}}})
	}
	if t.RoleARN != "" {
		add(schemas.EnvAWSRoleARN, t.RoleARN)
		add(schemas.EnvAWSWebIdentityFile, "/var/run/secrets/aws/token")
		mounts = append(mounts, corev1.VolumeMount{Name: "aws-web-identity", MountPath: "/var/run/secrets/aws", ReadOnly: true})
		vols = append(vols, corev1.Volume{Name: "aws-web-identity", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", Audience: "sts.amazonaws.com", ExpirationSeconds: ptr.To(int64(3600))}}},
		}}})
	}
	if c.TLS {
		add(schemas.EnvTLSCAPath, schemas.MountTLSCA+"/ca.crt")
		add(schemas.EnvTLSServerName, spec.Cluster+"."+r.Namespace+".svc")
		mounts = append(mounts, corev1.VolumeMount{Name: "openbao-tls-ca", MountPath: schemas.MountTLSCA, ReadOnly: true})
		vols = append(vols, corev1.Volume{Name: "openbao-tls-ca", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: spec.Cluster + "-tls-ca", DefaultMode: ptr.To(int32(0o444)),
		}}})
	}

	psc := &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	if set.PodSecurity == v1beta1.PodSecurityPinned {
		psc.RunAsUser = ptr.To(int64(65532))
		psc.RunAsGroup = ptr.To(int64(65532))
		psc.FSGroup = ptr.To(int64(65532))
	}

	m := meta(r, spec.Cluster, n.Job)
	labels := map[string]string{schemas.LabelRestore: r.RequestName, schemas.LabelRestoreCluster: spec.Cluster}
	return &batchv1.Job{
		TypeMeta:   metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
		ObjectMeta: m,
		Spec: batchv1.JobSpec{
			BackoffLimit:            ptr.To(set.BackoffLimit),
			ActiveDeadlineSeconds:   ptr.To(set.ActiveDeadlineSeconds),
			TTLSecondsAfterFinished: ptr.To(set.TTLSecondsAfterFinished),
			PodFailurePolicy: &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{
				// An evicted or preempted pod is retried without counting;
				// the submission record still stops a second POST.
				{Action: batchv1.PodFailurePolicyActionIgnore, OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue}}},
				{Action: batchv1.PodFailurePolicyActionCount, OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: retryCodes}},
				// Everything else is permanent or may have reached
				// OpenBao: fail the Job at once, never retry.
				{Action: batchv1.PodFailurePolicyActionFailJob, OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{Operator: batchv1.PodFailurePolicyOnExitCodesOpNotIn, Values: retryCodes}},
			}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					RestartPolicy:                corev1.RestartPolicyNever,
					ServiceAccountName:           n.ServiceAccount,
					AutomountServiceAccountToken: ptr.To(false),
					SecurityContext:              psc,
					Containers: []corev1.Container{{
						Name:                     "restore",
						Image:                    image,
						Env:                      env,
						VolumeMounts:             mounts,
						Resources:                set.Resources,
						TerminationMessagePath:   "/dev/termination-log",
						TerminationMessagePolicy: corev1.TerminationMessageReadFile,
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false),
							ReadOnlyRootFilesystem:   ptr.To(true),
							RunAsNonRoot:             ptr.To(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
					Volumes: vols,
				},
			},
		},
	}
}

// storageCredentials is the volume of the store's credentials.
const storageCredentials = "storage-credentials"
