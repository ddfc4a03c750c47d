package lock

import (
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// NewCluster returns an empty OpenBaoCluster object to read into. It is
// unstructured, so that every status field we do not own survives our
// writes untouched.
func NewCluster() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(schemas.ClusterGVK)
	return u
}

// ReadLock returns the cluster's status.operationLock.
func ReadLock(cluster *unstructured.Unstructured) ClusterLock {
	m, _, _ := unstructured.NestedStringMap(cluster.Object, "status", "operationLock")
	return ClusterLock{Operation: m["operation"], Holder: m["holder"], Message: m["message"]}
}

// LockTimes returns the lock's acquiredAt, if set and well-formed.
func LockTimes(cluster *unstructured.Unstructured) (acquiredAt time.Time, ok bool) {
	s, found, _ := unstructured.NestedString(cluster.Object, "status", "operationLock", "acquiredAt")
	if !found {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, s)
	return t, err == nil
}

// setLock writes a restore's lock into the object (not to the API).
func setLock(cluster *unstructured.Unstructured, holder, message string, now time.Time) {
	ts := now.UTC().Format(time.RFC3339)
	_ = unstructured.SetNestedStringMap(cluster.Object, map[string]string{
		"operation":  schemas.OperationRestore,
		"holder":     holder,
		"message":    message,
		"acquiredAt": ts,
		"renewedAt":  ts,
	}, "status", "operationLock")
}

// clearLock removes the lock from the object (not from the API).
func clearLock(cluster *unstructured.Unstructured) {
	unstructured.RemoveNestedField(cluster.Object, "status", "operationLock")
}
