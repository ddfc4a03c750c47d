package nsinit

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// setupRoot builds the container's root (steps 1 to 4 above).
func setupRoot(s Spec) error {
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if s.Hostname != "" {
		if err := syscall.Sethostname([]byte(s.Hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
	}
	b := &rootBuilder{root: s.Root, scratch: s.Scratch, private: map[string]bool{}}
	if err := b.mirrorHostRoot(); err != nil {
		return err
	}
	mounts := append([]Mount(nil), s.Mounts...)
	sort.SliceStable(mounts, func(i, j int) bool { return depth(mounts[i].Target) < depth(mounts[j].Target) })
	// First every overlay, so that an overlay never hides a volume bound
	// before it; then the binds, parents before children.
	for _, m := range mounts {
		fi, err := os.Stat(m.Source)
		if err != nil {
			return fmt.Errorf("volume source: %w", err)
		}
		if _, err := b.ensure(m.Target, fi.IsDir()); err != nil {
			return fmt.Errorf("mount path %s: %w", m.Target, err)
		}
	}
	for _, d := range s.Dirs {
		if _, err := b.ensure(d, true); err != nil {
			return fmt.Errorf("directory %s: %w", d, err)
		}
	}
	var readOnly []string
	for _, m := range mounts {
		fi, err := os.Stat(m.Source)
		if err != nil {
			return fmt.Errorf("volume source: %w", err)
		}
		target, err := b.ensure(m.Target, fi.IsDir())
		if err != nil {
			return fmt.Errorf("mount path %s: %w", m.Target, err)
		}
		host := filepath.Join(b.root, target)
		if err := syscall.Mount(m.Source, host, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", m.Source, m.Target, err)
		}
		if m.ReadOnly {
			readOnly = append(readOnly, host)
		}
		b.private[target] = true
	}
	// Read-only last, so that a mount point inside a read-only volume
	// (a secret at /etc/bao, another at /etc/bao/tls) could be created.
	for i := len(readOnly) - 1; i >= 0; i-- {
		if err := syscall.Mount("", readOnly[i], "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("read-only %s: %w", strings.TrimPrefix(readOnly[i], b.root), err)
		}
	}
	return nil
}

func depth(p string) int { return strings.Count(path.Clean(p), "/") }

type rootBuilder struct {
	root, scratch string
	// private holds container paths below which writes stay off the host
	// (overlays and volumes); "/" itself is the tmpfs.
	private  map[string]bool
	overlays int
}

// mirrorHostRoot mounts a tmpfs on root and mirrors the host's top level in it.
func (b *rootBuilder) mirrorHostRoot() error {
	if err := bindEach("/", b.root); err != nil {
		return fmt.Errorf("root: %w", err)
	}
	return nil
}

// isPrivate reports whether writes below the container path p stay off the host.
func (b *rootBuilder) isPrivate(p string) bool {
	for q := p; ; q = path.Dir(q) {
		if b.private[q] {
			return true
		}
		if q == "/" {
			return false
		}
	}
}

// ensure makes the container path p exist (a directory, or a file when
// !dir), overlaying its nearest existing ancestor first if that is a host
// directory. It returns p with symlinks resolved (inside the root).
func (b *rootBuilder) ensure(p string, dir bool) (string, error) {
	if !path.IsAbs(p) {
		return "", errors.New("not an absolute path")
	}
	existing, rest, err := b.resolve(p)
	if err != nil {
		return "", err
	}
	full := path.Join(append([]string{existing}, rest...)...)
	if len(rest) == 0 {
		fi, err := os.Stat(filepath.Join(b.root, existing))
		if err != nil {
			return "", err
		}
		if fi.IsDir() != dir {
			return "", fmt.Errorf("%s exists and is %s", existing, map[bool]string{true: "a directory", false: "not a directory"}[fi.IsDir()])
		}
		return existing, nil
	}
	if existing != "/" && !b.isPrivate(existing) {
		if err := b.overlay(existing); err != nil {
			return "", err
		}
	}
	if existing == "/" {
		// A new top-level directory lives in the root tmpfs.
		b.private["/"+rest[0]] = true
	}
	host := filepath.Join(b.root, full)
	if dir {
		if err := os.MkdirAll(host, 0o755); err != nil {
			return "", err
		}
		return full, nil
	}
	return full, CreateFile(host)
}

// CreateFile creates an empty file at p, and its directories, unless it
// exists: a bind-mount target, or a hostPath FileOrCreate volume.
func CreateFile(p string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// resolve walks p inside the root, resolving symlinks against the root, and
// returns the longest existing prefix (resolved) and the missing components.
func (b *rootBuilder) resolve(p string) (string, []string, error) {
	todo := strings.Split(strings.Trim(path.Clean(p), "/"), "/")
	if len(todo) == 1 && todo[0] == "" {
		return "/", nil, nil
	}
	cur := "/"
	for links := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, c)
		fi, err := os.Lstat(filepath.Join(b.root, next))
		if errors.Is(err, os.ErrNotExist) {
			return cur, append([]string{c}, todo...), nil
		}
		if err != nil {
			return "", nil, err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > 40 {
			return "", nil, errors.New("too many symlinks")
		}
		l, err := os.Readlink(filepath.Join(b.root, next))
		if err != nil {
			return "", nil, err
		}
		if path.IsAbs(l) {
			cur = "/"
		}
		todo = append(strings.Split(strings.Trim(l, "/"), "/"), todo...)
	}
	return cur, nil, nil
}

// overlay mounts an overlayfs over the container directory dir (a host
// directory seen through the mirror) and binds the host's mounts below it
// again on top.
func (b *rootBuilder) overlay(dir string) error {
	if dir == "/proc" || strings.HasPrefix(dir, "/proc/") || dir == "/sys" || strings.HasPrefix(dir, "/sys/") {
		return fmt.Errorf("cannot create paths below %s", dir)
	}
	b.overlays++
	base := filepath.Join(b.scratch, "overlay-"+strconv.Itoa(b.overlays))
	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	target := filepath.Join(b.root, dir)
	subs, err := submounts(target)
	if err != nil {
		return err
	}
	// The host path, not the mirror: the mirror is a bind of it, and the
	// overlay's lower layer must not see the mounts made on the mirror.
	opts := "lowerdir=" + dir + ",upperdir=" + upper + ",workdir=" + work
	if err := syscall.Mount("overlay", target, "overlay", 0, opts); err != nil {
		// In a user namespace some kernels refuse to clone a lower layer
		// such as /dev's devtmpfs ("failed to clone lowerpath", EINVAL).
		if ferr := bindEach(dir, target); ferr != nil {
			return fmt.Errorf("overlay on %s: %w; then a tmpfs with its entries bound: %w", dir, err, ferr)
		}
	}
	for _, m := range subs {
		src := strings.TrimPrefix(m, b.root)
		if err := syscall.Mount(src, m, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s again over the overlay: %w", src, err)
		}
	}
	b.private[dir] = true
	return nil
}

// bindEach mounts a tmpfs on target that shows each entry of the host
// directory dir by a bind (a symlink by a copy): it mirrors the host's top
// level as the container's root, and stands in for an overlay where the
// kernel refuses one, letting new paths be created beside dir's entries.
func bindEach(dir, target string) error {
	if err := syscall.Mount("tmpfs", target, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("tmpfs on %s: %w", target, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		src, dst := filepath.Join(dir, e.Name()), filepath.Join(target, e.Name())
		fi, err := os.Lstat(src)
		if err != nil {
			continue // gone meanwhile
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(src)
			if err != nil {
				return err
			}
			if err := os.Symlink(l, dst); err != nil {
				return err
			}
			continue
		case fi.IsDir():
			if err := os.Mkdir(dst, fi.Mode().Perm()); err != nil {
				return err
			}
		default:
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			_ = f.Close()
		}
		if err := syscall.Mount(src, dst, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", src, err)
		}
	}
	return nil
}

// submounts lists the outermost mount points strictly below dir in this
// thread's mount namespace.
func submounts(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var all []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if strings.HasPrefix(mp, dir+"/") {
			all = append(all, mp)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	sort.Strings(all)
	var out []string
	for _, m := range all {
		if len(out) > 0 && (m == out[len(out)-1] || strings.HasPrefix(m, out[len(out)-1]+"/")) {
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

// unescapeMountinfo decodes the octal escapes (\040) of /proc/*/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				sb.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		sb.WriteByte(s[i])
	}
	return sb.String()
}
