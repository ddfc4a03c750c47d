// Command openbao-restore-executor is the restore Job's program alone: the
// executor without the function and the reconciler. The image's
// openbao-restore execs it for a restore (EXECUTOR_MODE=restore, or the
// restore command), so that the Job's process carries only the executor's
// code: about 48 MiB of peak RSS instead of 79 for the whole binary, whose
// mapped pages are most of a restore's resident memory.
package main

import (
	"os"

	"github.com/openbao-restore/openbao-restore/executor"
)

func main() {
	os.Exit(executor.Run(executor.Options{}))
}
