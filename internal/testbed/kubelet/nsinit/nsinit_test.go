package nsinit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSpawn starts a shell in its own namespaces with a volume below /etc,
// a new top-level directory and a termination-log file, and checks that the
// host sees none of it.
func TestSpawn(t *testing.T) {
	dir := t.TempDir()
	vol := filepath.Join(dir, "vol")
	if err := os.MkdirAll(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vol, "f"), []byte("content"), 0o644); err != nil {
		t.Fatal(err)
	}
	vol2 := filepath.Join(dir, "vol2")
	if err := os.MkdirAll(vol2, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vol2, "n"), []byte("nested"), 0o644); err != nil {
		t.Fatal(err)
	}
	term := filepath.Join(dir, "term")
	if err := os.WriteFile(term, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "log")
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lf.Close() }()
	began := time.Now()
	p, err := Start(Spec{
		Root: root, Scratch: dir, Hostname: "spawned",
		Mounts: []Mount{
			{Source: vol, Target: "/etc/spawn-test/vol", ReadOnly: true},
			{Source: vol2, Target: "/etc/spawn-test/vol/nested", ReadOnly: true},
			{Source: vol, Target: "/spawn-test/data"},
			{Source: vol, Target: "/var/run/secrets/spawn-test"},
			{Source: term, Target: "/dev/termination-log"},
		},
		Path: "/bin/sh",
		Args: []string{"sh", "-c", `cat /etc/spawn-test/vol/f /spawn-test/data/f /var/run/secrets/spawn-test/f /etc/spawn-test/vol/nested/n; echo; hostname; echo $$; ` +
			`mkdir -p /etc/spawn-test/new; echo msg > /dev/termination-log; touch /etc/spawn-test/vol/g 2>/dev/null || echo read-only; echo 0 > /dev/null && echo devnull`},
		Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/spawn-test/data", Log: lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done:
	case <-time.After(10 * time.Second):
		p.Signal(9)
		t.Fatal("process did not exit")
	}
	t.Logf("spawn to exit: %s", time.Since(began))
	out, _ := os.ReadFile(logPath)
	want := "contentcontentcontentnested\nspawned\n1\nread-only\ndevnull\n"
	if p.Code != 0 || string(out) != want {
		t.Fatalf("exit %d, %v, output %q, want %q", p.Code, p.Err, out, want)
	}
	if b, _ := os.ReadFile(term); strings.TrimSpace(string(b)) != "msg" {
		t.Fatalf("termination log %q", b)
	}
	for _, p := range []string{"/etc/spawn-test", "/spawn-test", "/run/secrets/spawn-test"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s exists on the host", p)
		}
	}
}

// TestSiblingsSurvive: starting containers must never end a thread of the
// test binary, since a child started from that thread with a parent-death
// signal (as the test bed starts its control plane) would be killed.
func TestSiblingsSurvive(t *testing.T) {
	// A sibling started just before each container, from the same
	// goroutine: the thread that forked it is the likeliest to be reused.
	var siblings []*exec.Cmd
	dir := t.TempDir()
	for i := range 30 {
		c := exec.Command("sleep", "60")
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		siblings = append(siblings, c)
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
		run := filepath.Join(dir, fmt.Sprint(i))
		if err := os.MkdirAll(filepath.Join(run, "root"), 0o755); err != nil {
			t.Fatal(err)
		}
		p, err := Start(Spec{Root: filepath.Join(run, "root"), Scratch: run, Path: "/bin/true", Args: []string{"true"}, Dir: "/"})
		if err != nil {
			t.Fatal(err)
		}
		<-p.Done
		if p.Code != 0 {
			t.Fatalf("exit %d: %v", p.Code, p.Err)
		}
	}
	for _, c := range siblings {
		// A killed child stays a zombie until waited for.
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if f := strings.Fields(string(b)); len(f) < 3 || f[2] == "Z" {
			t.Fatalf("a sibling process died: %s", b)
		}
	}
}

// TestSpawnUnprivileged runs TestSpawn as an unprivileged user (nobody),
// where Start adds a user namespace. Run as non-root, TestSpawn itself
// takes that path.
func TestSpawnUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		TestSpawn(t)
		return
	}
	dir, err := os.MkdirTemp("", "nsinit-unprivileged-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, tmp} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "nsinit.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestSpawn$", "-test.count=1", "-test.v")
	cmd.Dir = dir
	cmd.Env = []string{"TMPDIR=" + tmp, "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestSpawn") {
		t.Fatalf("TestSpawn as uid 65534: %v\n%s", err, out)
	}
}
