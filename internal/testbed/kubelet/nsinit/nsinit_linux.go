// Package nsinit starts a container process of the harness kubelet in its
// own mount, UTS and PID namespaces, with its volumes bound into a private
// root. It has no dependencies beyond the standard library, so that its
// init function, which does the work in the re-executed test binary, runs
// before the heavy initialisation of client-go's packages.
package nsinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
)

// How a container process is started (spawn):
//
// The kubelet starts its own executable again (/proc/self/exe: the test
// binary) with clone flags for new mount, UTS and PID namespaces, its own
// process group and a parent-death signal, and with spawnEnv naming a JSON
// file that describes the container. This package's init function sees
// that variable before anything else runs, and, inside the new namespaces:
//
//  1. makes every mount private, so nothing propagates back to the host,
//     and sets the pod's hostname;
//  2. mounts a tmpfs at <state>/root holding a mirror of the host's / (each
//     top-level directory recursively bind-mounted, symlinks copied, files
//     bind-mounted), so that new top-level directories (/openbao/data) can
//     be created in the tmpfs;
//  3. for every mount path whose parent does not exist yet below an existing
//     host directory (/etc/bao/tls with /etc existing), mounts an overlayfs
//     over the nearest existing ancestor, its upper and work directories in
//     the container's state directory, so that mkdir never reaches the
//     host; the host mounts below that ancestor (/dev/pts, /dev/shm) are
//     bound again on top of the overlay;
//  4. binds each volume at its path (read-only when asked);
//  5. chroots into the new root, changes to the working directory and execs
//     the container's program, which keeps the PID (PID 1 of its namespace:
//     when it dies the kernel kills everything it forked), the process
//     group and the parent-death signal.
//
// A setup error is written to an inherited close-on-exec pipe; a pipe
// closed with nothing written means the exec succeeded. No mount is ever
// made in the test binary's own namespace, and no thread of the test binary
// changes namespace: a Go thread that ended locked would SIGKILL every
// child started from it with a parent-death signal (the control plane's
// helpers included).
//
// Symlinks in mount paths are resolved inside the new root (/var/run/x is
// /run/x here), never by the host's kernel while the root is being built, so
// a symlink cannot lead a mkdir out of it.

// spawnEnv names the spec file of a container being set up.
const spawnEnv = "HARNESS_KUBELET_SPAWN"

func init() {
	if spec := os.Getenv(spawnEnv); spec != "" {
		spawnChild(spec) // never returns
	}
}

// Mount is one bind mount into a container's root.
type Mount struct {
	Source   string // host path: a directory or a file
	Target   string // absolute path inside the container
	ReadOnly bool
}

// Spec says how to start one container process.
type Spec struct {
	// Root is an empty directory the root tmpfs is mounted on.
	Root     string // empty directory the root tmpfs is mounted on
	Scratch  string // directory for overlay upper and work directories
	Mounts   []Mount
	Dirs     []string // directories to create inside the container (working dir)
	Hostname string
	Path     string
	Args     []string
	Env      []string
	Dir      string
	Log      *os.File `json:"-"`
}

// Process is a started container process.
type Process struct {
	Pid  int
	Done chan struct{} // closed when the process has been reaped
	Err  error         // the Wait error, valid after Done
	Code int           // exit code (128+signal when killed), valid after Done
}

// Signal sends sig to the process's group (the whole PID namespace for
// SIGKILL, since the process is its init).
func (p *Process) Signal(sig syscall.Signal) {
	_ = syscall.Kill(-p.Pid, sig)
	_ = syscall.Kill(p.Pid, sig)
}

// Start starts the process as described above and returns once it runs.
func Start(s Spec) (*Process, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	specPath := filepath.Join(s.Scratch, "spawn.json")
	if err := os.WriteFile(specPath, b, 0o600); err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer func() { _ = r.Close() }()
	env := []string{spawnEnv + "=" + specPath}
	// The test bed's watchdog kills what carries its marker if the test
	// binary dies (internal/testbed/proc.go).
	if v, ok := os.LookupEnv("OPENBAO_RESTORE_TESTBED"); ok {
		env = append(env, "OPENBAO_RESTORE_TESTBED="+v)
	}
	cmd := &exec.Cmd{Path: "/proc/self/exe", Args: []string{"harness-kubelet-init"}, Env: env,
		Stdout: s.Log, Stderr: s.Log, ExtraFiles: []*os.File{w}}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS | syscall.CLONE_NEWPID,
	}
	if uid := os.Geteuid(); uid != 0 {
		// Without root, a user namespace in which the caller is root grants
		// the mounts (where the kernel allows unprivileged user namespaces).
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
		cmd.SysProcAttr.GidMappingsEnableSetgroups = false
	}
	err = cmd.Start()
	_ = w.Close()
	if err != nil {
		return nil, err
	}
	msg, _ := io.ReadAll(r)
	if len(msg) > 0 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, errors.New(string(msg))
	}
	p := &Process{Pid: cmd.Process.Pid, Done: make(chan struct{})}
	go func() {
		p.Err = cmd.Wait()
		p.Code = exitCode(cmd.ProcessState)
		close(p.Done)
	}()
	return p, nil
}

func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// spawnChild runs in the re-executed binary, in the new namespaces.
func spawnChild(specPath string) {
	runtime.LockOSThread()
	status := os.NewFile(3, "status")
	syscall.CloseOnExec(3)
	fail := func(err error) {
		_, _ = status.WriteString("harness kubelet: " + err.Error())
		os.Exit(127)
	}
	b, err := os.ReadFile(specPath)
	if err != nil {
		fail(err)
	}
	var s Spec
	if err := json.Unmarshal(b, &s); err != nil {
		fail(err)
	}
	if err := setupRoot(s); err != nil {
		fail(err)
	}
	if err := syscall.Chroot(s.Root); err != nil {
		fail(fmt.Errorf("chroot: %w", err))
	}
	if err := syscall.Chdir(s.Dir); err != nil {
		fail(fmt.Errorf("working directory %s: %w", s.Dir, err))
	}
	fail(fmt.Errorf("exec %s: %w", s.Path, syscall.Exec(s.Path, s.Args, s.Env)))
}
