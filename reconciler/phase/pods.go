package phase

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// pods reads the terminated pods of a finished Job, oldest first, with
// their exit codes and termination messages. The Job cache holds the
// restore's pods too (they carry schemas.LabelRestore); when it shows fewer ended
// pods than the Job counts, or one not yet ended, it lags, and the API is
// read instead. A terminated container's state never changes again, so a
// cached copy that has it is as good as a fresh one.
func (r *Reconciler) pods(ctx context.Context, j *batchv1.Job) ([]Pod, error) {
	var list corev1.PodList
	sel := []client.ListOption{client.InNamespace(j.Namespace), client.MatchingLabels{labelJobName: j.Name}}
	if err := r.Jobs.List(ctx, &list, sel...); err != nil || !allEnded(list.Items, j) {
		if err := r.APIReader.List(ctx, &list, sel...); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(list.Items, func(a, b corev1.Pod) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	var out []Pod
	for _, p := range list.Items {
		for _, cs := range p.Status.ContainerStatuses {
			t := cs.State.Terminated
			if t == nil {
				continue
			}
			pod := Pod{Name: p.Name, ExitCode: t.ExitCode, Raw: t.Message}
			var tm schemas.TerminationMessage
			if t.Message != "" && json.Unmarshal([]byte(t.Message), &tm) == nil {
				pod.Termination = &tm
			}
			out = append(out, pod)
		}
	}
	return out, nil
}

// allEnded reports whether pods hold every ended pod of the Job, each with
// its containers terminated.
func allEnded(pods []corev1.Pod, j *batchv1.Job) bool {
	if len(pods) < int(j.Status.Succeeded+j.Status.Failed) || len(pods) == 0 {
		return false
	}
	for _, p := range pods {
		if len(p.Status.ContainerStatuses) == 0 {
			return false
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Terminated == nil {
				return false
			}
		}
	}
	return true
}
