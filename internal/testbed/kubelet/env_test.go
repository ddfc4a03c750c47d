package kubelet

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"POD_IP": "127.1.2.3", "EMPTY": ""}
	for in, want := range map[string]string{
		"http://$(POD_IP):8200": "http://127.1.2.3:8200",
		"$(MISSING)/$(EMPTY)x":  "$(MISSING)/x",
		"$$(POD_IP) $$ $":       "$(POD_IP) $ $",
		"$(POD_IP":              "$(POD_IP",
		"plain":                 "plain",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFieldAndResourceValues(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u", Labels: map[string]string{"a": "b"}},
		Spec: corev1.PodSpec{ServiceAccountName: "sa", NodeName: "n", Containers: []corev1.Container{{
			Name: "c", Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
			},
		}}},
	}
	for path, want := range map[string]string{
		"metadata.name": "p", "metadata.namespace": "ns", "metadata.uid": "u", "spec.serviceAccountName": "sa",
		"spec.nodeName": "n", "status.podIP": "127.0.0.9", "metadata.labels['a']": "b", "metadata.labels": "a=\"b\"\n",
	} {
		got, err := fieldValue(pod, path, "127.0.0.9")
		if err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", path, got, err, want)
		}
	}
	c := &pod.Spec.Containers[0]
	for _, tc := range []struct {
		res, div, want string
	}{
		{"requests.cpu", "", "1"}, {"requests.cpu", "1m", "250"}, {"limits.cpu", "", "64"},
		{"limits.memory", "1Mi", "64"}, {"requests.memory", "", "0"},
	} {
		ref := &corev1.ResourceFieldSelector{Resource: tc.res}
		if tc.div != "" {
			ref.Divisor = resource.MustParse(tc.div)
		}
		got, err := resourceValue(pod, ref, c)
		if err != nil || got != tc.want {
			t.Errorf("%s/%s = %q, %v; want %q", tc.res, tc.div, got, err, tc.want)
		}
	}
}
