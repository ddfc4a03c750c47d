package main

import (
	"cuelang.org/go/cue"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// drillSpecSchema exports #DrillSpec and adds its CEL rules. A drill's spec
// may change (its schedule, suspend): it is no job request.
func drillSpecSchema(ctx *cue.Context, v cue.Value) (obj, error) {
	spec, err := export(ctx, v, "DrillSpec", "#DrillBoundedDefaults")
	if err != nil {
		return nil, err
	}
	if err := admission(v, spec, "#DrillAdmission"); err != nil {
		return nil, err
	}
	spec["type"] = "object"
	return spec, nil
}

// drillStatus is the drill's status schema: the reconciler's record of its
// runs.
func drillStatus() obj {
	str := func(d string) obj { return obj{"type": "string", "description": d} }
	at := func(d string) obj { return obj{"type": "string", "format": "date-time", "description": d} }
	num := func(d string) obj { return obj{"type": "number", "description": d} }
	run := func(d string) obj {
		return obj{"type": "object", "description": d, "properties": obj{
			"run":     obj{"type": "integer", "format": "int64", "description": "The run's number, from 1."},
			"restore": str("The run's OpenBaoRestore (a claim in the drill's namespace)."),
			"cluster": str("The run's new OpenBaoCluster."),
			"snapshot": obj{"type": "object", "description": "The source's newest backup when the run began, pinned.", "properties": obj{
				"key": str("Its object key."), "digest": str("Its SHA-256."), "size": obj{"type": "integer", "format": "int64", "description": "Its size in bytes."},
				"clusterID": str("The cluster_id it was taken from."), "version": str("The OpenBao version it was taken from."),
			}},
			"startedAt":            at("When the run began."),
			"restoredAt":           at("When its restore was Completed: the read check follows."),
			"nudgedAt":             at("When the run was last written again because Crossplane's watch circuit breaker had stopped watching the drill (Responsive=False) while the run waited for its composition."),
			"endedAt":              at("When its outcome was known."),
			"outcome":              str("Passed or Failed."),
			"reason":               str("Why: Passed, RestoreFailed, ReadCheckFailed, NoCompatibleSnapshot, VersionMismatch."),
			"message":              str("What happened."),
			"timeToRecoverSeconds": num("From the run's start to its checks verified: the time to recover."),
			"bootstrapSeconds":     num("Of it, until the new cluster was up."),
			"restoreSeconds":       num("Of it, from the cluster up to the restore Completed."),
			"checksSeconds":        num("Of it, the read checks."),
		}}
	}
	return obj{
		"type": "object",
		"properties": obj{
			"active": run("The run under way, if any: one at a time."),
			"runs": obj{"type": "array", "description": "The last runs (spec.historyLimit), newest first.",
				"items": run("A finished run.")},
			"lastRun":         obj{"type": "integer", "format": "int64", "description": "The number of the last run begun."},
			"lastSuccessTime": at("When a run last passed."),
			"nextRunAt":       at("When the schedule runs next (UTC)."),
			"lastBackupKey":   str("The source's newest backup last seen, for everySuccessfulBackups."),
			"backupsSinceRun": obj{"type": "integer", "format": "int64", "description": "New backups of the source seen since the last run."},
			"lastTrigger":     str("The value of the run-now annotation last acted on."),
			"plan": obj{"type": "object", "description": "What the function composes. Written by the function.",
				"properties": obj{"stage": str("The function's view of the drill.")}},
		},
	}
}

func drillVersion(spec obj) obj {
	return obj{
		"name": schemas.Version, "served": true, "referenceable": true,
		"additionalPrinterColumns": []any{
			obj{"name": "Source", "type": "string", "jsonPath": ".spec.source.cluster"},
			obj{"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
			obj{"name": "Last-Success", "type": "date", "jsonPath": ".status.lastSuccessTime"},
			obj{"name": "Passed", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Passed')].status"},
			obj{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
		},
		"schema": obj{"openAPIV3Schema": obj{
			"type":       "object",
			"required":   []any{"spec"},
			"properties": obj{"spec": spec, "status": drillStatus()},
		}},
	}
}

// legacyDrillXRD is the drill's XRD in the package: cluster-scoped XRs
// with namespaced claims, as the restore's.
func legacyDrillXRD(spec obj) obj {
	return obj{
		"apiVersion": "apiextensions.crossplane.io/v1",
		"kind":       "CompositeResourceDefinition",
		"metadata":   obj{"name": "xopenbaorestoredrills." + schemas.Group},
		"spec": obj{
			"group":                 schemas.Group,
			"scope":                 "LegacyCluster",
			"names":                 obj{"kind": schemas.DrillXRKind, "plural": "xopenbaorestoredrills", "categories": []any{"crossplane", "openbao-restore"}},
			"claimNames":            obj{"kind": schemas.DrillClaimKind, "plural": "openbaorestoredrills", "shortNames": []any{"obdrill"}, "categories": []any{"openbao-restore"}},
			"defaultCompositionRef": obj{"name": "xopenbaorestoredrills." + schemas.Group},
			"versions":              []any{drillVersion(spec)},
		},
	}
}

// namespacedDrillXRD is the same schema as a namespaced XR (examples).
func namespacedDrillXRD(spec obj) obj {
	return obj{
		"apiVersion": "apiextensions.crossplane.io/v2",
		"kind":       "CompositeResourceDefinition",
		"metadata":   obj{"name": "openbaorestoredrills.ns." + schemas.Group},
		"spec": obj{
			"group":                 "ns." + schemas.Group,
			"scope":                 "Namespaced",
			"names":                 obj{"kind": schemas.DrillClaimKind, "plural": "openbaorestoredrills", "categories": []any{"crossplane", "openbao-restore"}},
			"defaultCompositionRef": obj{"name": "openbaorestoredrills.ns." + schemas.Group},
			"versions":              []any{drillVersion(spec)},
		},
	}
}
