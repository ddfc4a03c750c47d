package executor

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// DefaultHoldBack is how much of the snapshot's end is kept back until every
// check has passed. OpenBao 2.4.0 applies a snapshot whose last 1–8 bytes
// (the gzip trailer) are missing, and applies an upload that dies in its last
// bytes without answering, but refuses one cut 20 bytes or more before its
// end. Holding back far more than 20 bytes means that whatever we abort on, the
// server has seen a body that is cut too early to be applied.
const DefaultHoldBack = 1 << 20

// holdBack is the request body of the restore. It passes the object's bytes
// through, counting, hashing and checking them as a snapshot archive
// (archiveCheck), except the last hold bytes, which it buffers. At the
// source's end it checks the byte count against the size the object store
// announced, the pins and the archive, then calls gate (which records the
// submission), and only then releases the tail. An archive found damaged
// earlier stops the body at once. Any failure before that
// becomes a Read error: the HTTP transport then closes the connection, and
// OpenBao sees a body cut at least hold bytes short, which it never applies.
// Memory is one buffer of hold bytes, whatever the snapshot's size.
type holdBack struct {
	src       io.Reader
	size      int64 // announced by the object store's HEAD
	wantSum   string
	gate      func(sum string, n int64) error
	passLimit int64 // bytes that may go out before the checks

	h        hash.Hash     // written by the prefetcher; read only after its EOF
	archive  *archiveCheck // fed by the prefetcher
	pf       *prefetch
	n        atomic.Int64 // bytes read from the source
	sent     atomic.Int64 // bytes handed to the transport
	tail     []byte
	tailOff  int
	released atomic.Bool // the gate passed: from here the outcome may be unknown
	mu       sync.Mutex
	err      error // the first failure, reported instead of the transport's
	sum      string
	info     schemas.ArchiveInfo // the archive's metadata, once checked
}

func newHoldBack(src io.Reader, size int64, hold int, wantSum string, gate func(string, int64) error) *holdBack {
	if hold < 64 {
		hold = 64
	}
	pass := size - int64(hold)
	if pass < 0 {
		pass = 0
	}
	h := sha256.New()
	ac := newArchiveCheck()
	pf := newPrefetch(src, h, ac)
	return &holdBack{src: pf, pf: pf, size: size, wantSum: wantSum, gate: gate, passLimit: pass, h: h, archive: ac, tail: make([]byte, 0, hold)}
}

func (r *holdBack) fail(err error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = err
	}
	return r.err
}

// Close stops the prefetcher and the archive's check.
func (r *holdBack) Close() {
	r.pf.Close()
	r.archive.Abort()
}

// Err is the failure that stopped the body, if any (a check, the source, or
// the gate); nil when the body was cut by the transport.
func (r *holdBack) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *holdBack) Read(p []byte) (int, error) {
	if err := r.Err(); err != nil {
		return 0, err
	}
	if r.released.Load() {
		if r.tailOff >= len(r.tail) {
			return 0, io.EOF
		}
		k := copy(p, r.tail[r.tailOff:])
		r.tailOff += k
		r.sent.Add(int64(k))
		return k, nil
	}
	// Pass-through phase: up to passLimit bytes go straight out, unless
	// the archive is already known to be damaged.
	if err := r.archive.Err(); err != nil {
		return 0, r.fail(err)
	}
	if r.n.Load() < r.passLimit {
		want := r.passLimit - r.n.Load()
		if int64(len(p)) > want {
			p = p[:want]
		}
		k, err := r.src.Read(p)
		if k > 0 {
			r.n.Add(int64(k))
			r.sent.Add(int64(k))
		}
		if err == io.EOF {
			return k, r.fail(r.endedEarly())
		}
		if err != nil {
			return k, r.fail(r.readFailure(err))
		}
		return k, nil
	}
	// Tail phase: read the rest into the buffer (one byte more than it can
	// hold would be an object longer than announced), then check and gate.
	if err := r.fillTail(); err != nil {
		return 0, r.fail(err)
	}
	if r.n.Load() != r.size {
		return 0, r.fail(r.endedEarly())
	}
	r.sum = hex.EncodeToString(r.h.Sum(nil))
	if r.wantSum != "" && r.sum != r.wantSum {
		return 0, r.fail(fail(schemas.ExitVerification, nil, "digest mismatch: the snapshot is sha256:%s, the pin is sha256:%s", r.sum, r.wantSum))
	}
	info, err := r.archive.Close()
	if err != nil {
		return 0, r.fail(err)
	}
	r.info = info
	if r.gate != nil {
		if err := r.gate(r.sum, r.n.Load()); err != nil {
			return 0, r.fail(err)
		}
	}
	r.released.Store(true)
	return r.Read(p)
}

func (r *holdBack) fillTail() error {
	var one [1]byte
	for {
		buf := r.tail[len(r.tail):cap(r.tail)]
		if len(buf) == 0 {
			// Full: the source must be at its end now.
			k, err := r.src.Read(one[:])
			if k > 0 {
				r.n.Add(int64(k))
				return fail(schemas.ExitVerification, nil, "the object is longer than the %d bytes its HEAD announced", r.size)
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return r.readFailure(err)
			}
			continue
		}
		k, err := r.src.Read(buf)
		if k > 0 {
			r.tail = r.tail[:len(r.tail)+k]
			r.n.Add(int64(k))
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return r.readFailure(err)
		}
	}
}

// endedEarly is an object that ended cleanly before the size its HEAD
// announced: a wrong object, not a network failure.
func (r *holdBack) endedEarly() error {
	return fail(schemas.ExitVerification, nil, "the object store ended the object cleanly after %d bytes, but its HEAD announced %d", r.n.Load(), r.size)
}

// readFailure is a failed read of the object, which always happens before
// the gate (the source is read to its end before the tail can be
// released), so it is retried. A body that the store cut short (the
// connection closed before Content-Length bytes: io.ErrUnexpectedEOF) is
// a network failure like a reset, not a wrong object: it says so, because
// "unexpected EOF" alone sends people looking at the snapshot.
func (r *holdBack) readFailure(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return transient(err, "the object store closed the connection after %d of the snapshot's %d bytes (the body was cut short in transit; if it persists, check the store and any proxy or load balancer in front of it)", r.n.Load(), r.size)
	}
	return transient(err, "reading the snapshot from the object store failed after %d of %d bytes", r.n.Load(), r.size)
}

// progress logs bytes, rate and ETA at intervals while a transfer runs.
func progress(logf func(string, ...any), what string, total int64, done func() int64, every time.Duration) (stop func()) {
	start := time.Now()
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				n := done()
				el := time.Since(start).Seconds()
				rate := float64(n) / el
				if total <= 0 {
					// A stream of unknown length: what went, and how fast.
					logf("%s: %s, %s/s", what, human(n), human(int64(rate)))
					continue
				}
				eta := "unknown"
				if rate > 0 {
					eta = (time.Duration(float64(total-n)/rate) * time.Second).Round(time.Second).String()
				}
				logf("%s: %s of %s (%.0f%%), %s/s, ETA %s", what, human(n), human(total), 100*float64(n)/float64(max(total, 1)), human(int64(rate)), eta)
			}
		}
	}()
	return func() { close(quit); <-finished }
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
