package phase

import (
	"context"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/openbao-restore/openbao-restore/reconciler/restart"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// stepDownReport reads what the step-down Job said, nil until it ended.
func (r *Reconciler) stepDownReport(ctx context.Context, ns string, xr *unstructured.Unstructured) (*restart.StepDownReport, error) {
	j, err := r.job(ctx, ns, xr, schemas.JobRoleStepDown)
	if err != nil || j == nil {
		return nil, err
	}
	jf := jobFacts(j)
	if !jf.Complete && !jf.Failed {
		return nil, nil
	}
	pods, err := r.pods(ctx, j)
	if err != nil {
		return nil, err
	}
	rep := &restart.StepDownReport{Message: "the step-down Job ended without a report"}
	if jf.Failed {
		rep.Message = "the step-down Job failed: " + jf.FailedReason
	}
	if len(pods) > 0 {
		if tm := pods[len(pods)-1].Termination; tm != nil {
			rep.Message = tm.Message
			if jf.Complete && tm.StepDown != nil && tm.StepDown.SteppedDown {
				rep.SteppedDown, rep.NewLeader = true, tm.StepDown.NewLeader
			}
		}
	}
	return rep, nil
}
