package executor

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync/atomic"

	"github.com/openbao-restore/openbao-restore/schemas"
)

// An OpenBao Raft snapshot is a gzip'd tar of meta.json (the Raft
// metadata), state.bin (the data), SHA256SUMS (the SHA-256 of those two, as
// "<hex>  <name>" lines) and, from a cluster with a seal, SHA256SUMS.sealed
// (the same list encrypted by the seal, which only the cluster can open).
// OpenBao checks the sums when it receives the snapshot, after the whole
// body has arrived; archiveCheck checks them while the body streams, so
// that a damaged archive is refused before its tail is released and
// OpenBao never sees it whole.
const (
	memberMeta   = "meta.json"
	memberState  = "state.bin"
	memberSums   = "SHA256SUMS"
	memberSealed = "SHA256SUMS.sealed"
	// smallMember bounds the members read into memory (OpenBao's own
	// limit for them).
	smallMember = 8192
)

// archiveCheck is a pipeline stage (an io.Writer fed the object's bytes in
// order) that decompresses and unpacks the snapshot in a goroutine of its
// own and checks it: a gzip stream whose checksum and length trailer are
// present and right, the expected members and no other, each member's
// SHA-256 equal to its SHA256SUMS entry, and meta.json's size equal to
// state.bin's. Memory is a few buffers, whatever the snapshot's size.
type archiveCheck struct {
	pw     *io.PipeWriter
	done   chan struct{}
	failed atomic.Pointer[error] // set as soon as the archive is known bad

	// The verdict, written before done is closed and read after.
	info schemas.ArchiveInfo
	err  error
}

func newArchiveCheck() *archiveCheck {
	pr, pw := io.Pipe()
	a := &archiveCheck{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		a.info, a.err = readArchive(pr)
		if err := a.err; err != nil {
			a.failed.Store(&err)
			// Stop the writer: the rest of the bytes need no reading.
			_ = pr.CloseWithError(err)
		} else {
			// Whatever follows the archive's end is garbage, which the
			// gzip reader has already refused; drain to unblock Write.
			_, _ = io.Copy(io.Discard, pr)
		}
	}()
	return a
}

// Write feeds the archive's next bytes. It never fails: once the archive is
// known bad, the rest is dropped and Err reports why.
func (a *archiveCheck) Write(p []byte) (int, error) {
	if a.failed.Load() == nil {
		_, _ = a.pw.Write(p)
	}
	return len(p), nil
}

// Err is the archive's fault when one was already found, without waiting.
func (a *archiveCheck) Err() error {
	if p := a.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// Close ends the input and waits for the verdict: nil and the archive's
// metadata when every check passed.
func (a *archiveCheck) Close() (schemas.ArchiveInfo, error) {
	_ = a.pw.Close()
	<-a.done
	return a.info, a.err
}

// Abort stops the goroutine without a verdict (the stream ended otherwise).
func (a *archiveCheck) Abort() {
	_ = a.pw.CloseWithError(errors.New("aborted"))
	<-a.done
}

// countingReader counts the compressed bytes read, to say where a fault
// is. It is an io.ByteReader, so that the gzip reader reads through it
// without a buffer of its own, and leaves unread whatever follows the
// gzip stream.
type countingReader struct {
	r *bufio.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n += int64(k)
	return k, err
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

// readArchive reads a whole snapshot archive and checks it.
func readArchive(r io.Reader) (schemas.ArchiveInfo, error) {
	var info schemas.ArchiveInfo
	cr := &countingReader{r: bufio.NewReaderSize(r, 64<<10)}
	zr, err := gzip.NewReader(cr)
	if err != nil {
		return info, badArchive(nil, "it is not a gzip stream (%v), so it is not an OpenBao Raft snapshot", gzipFault(err))
	}
	zr.Multistream(false)
	tr := tar.NewReader(zr)
	sums := map[string]hash.Hash{memberMeta: sha256.New(), memberState: sha256.New()}
	seen := map[string]bool{}
	var list, meta []byte
	where := "at its start"
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return info, readFault(err, where, cr.n)
		}
		name := hdr.Name
		if seen[name] {
			return info, badArchive(nil, "it holds the member %s twice", name)
		}
		seen[name] = true
		where = "in its member " + name
		switch name {
		case memberMeta:
			if meta, err = readSmall(io.TeeReader(tr, sums[name]), name); err != nil {
				return info, readFault(err, where, cr.n)
			}
		case memberState:
			n, err := io.CopyBuffer(sums[name], tr, make([]byte, 32<<10))
			if err != nil {
				return info, readFault(err, where, cr.n)
			}
			info.StateSize = n
		case memberSums:
			if list, err = readSmall(tr, name); err != nil {
				return info, readFault(err, where, cr.n)
			}
		case memberSealed:
			if _, err = readSmall(tr, name); err != nil {
				return info, readFault(err, where, cr.n)
			}
			info.SealedSums = true
		default:
			return info, badArchive(nil, "it holds an unexpected member %q (an OpenBao Raft snapshot holds only %s, %s, %s and %s)", name, memberMeta, memberState, memberSums, memberSealed)
		}
		where = "after its member " + name
	}
	// The gzip trailer (CRC-32 and length) is checked only when the
	// decompressor reads past the end: OpenBao does not, which is why it
	// applies a snapshot missing its last bytes. Here it must end cleanly.
	extra, err := io.Copy(io.Discard, zr)
	if err != nil {
		return info, readFault(err, "at its end", cr.n)
	}
	if extra != 0 {
		return info, badArchive(nil, "%d bytes follow the end of its tar archive", extra)
	}
	if _, err := cr.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		return info, badArchive(nil, "bytes follow the end of its gzip stream")
	}
	for _, m := range []string{memberMeta, memberState, memberSums} {
		if !seen[m] {
			return info, badArchive(nil, "its member %s is missing", m)
		}
	}
	if err := checkSums(list, sums); err != nil {
		return info, err
	}
	var m struct {
		ID    string
		Index uint64
		Term  uint64
		Size  int64
	}
	if err := json.Unmarshal(meta, &m); err != nil {
		return info, badArchive(err, "its member %s is not valid JSON", memberMeta)
	}
	if m.Size != info.StateSize {
		return info, badArchive(nil, "its member %s says the data is %d bytes, but %s holds %d", memberMeta, m.Size, memberState, info.StateSize)
	}
	info.ID, info.Index, info.Term = m.ID, m.Index, m.Term
	return info, nil
}

// checkSums compares SHA256SUMS with the members' hashes: every member
// listed, each sum equal, and nothing else listed.
func checkSums(list []byte, sums map[string]hash.Hash) error {
	listed := map[string]bool{}
	for i, line := range strings.Split(strings.TrimRight(string(list), "\n"), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		want, err := hex.DecodeString(sum)
		if !ok || err != nil || len(want) != sha256.Size {
			return badArchive(nil, "line %d of its member %s is not \"<sha256>  <name>\"", i+1, memberSums)
		}
		h, known := sums[name]
		if !known {
			return badArchive(nil, "its member %s lists %q, which is not a member it can hold", memberSums, name)
		}
		if !bytes.Equal(h.Sum(nil), want) {
			return badArchive(nil, "the SHA-256 of its member %s does not match %s (the data is damaged)", name, memberSums)
		}
		listed[name] = true
	}
	for _, name := range []string{memberMeta, memberState} {
		if !listed[name] {
			return badArchive(nil, "its member %s does not list %s", memberSums, name)
		}
	}
	return nil
}

func readSmall(r io.Reader, name string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, smallMember+1))
	if err == nil && len(b) > smallMember {
		return nil, badArchive(nil, "its member %s is larger than %d bytes", name, smallMember)
	}
	return b, err
}

// readFault names what a read error means for the archive.
func readFault(err error, where string, at int64) error {
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return badArchive(nil, "it ends early, %s, after %d bytes (the object was cut short when it was stored, or is not a whole snapshot)", where, at)
	}
	return badArchive(nil, "it is damaged %s, near byte %d: %v", where, at, gzipFault(err))
}

// gzipFault says what the compression layer's errors mean.
func gzipFault(err error) string {
	var corrupt flate.CorruptInputError
	switch {
	case errors.Is(err, gzip.ErrChecksum):
		return "the gzip checksum does not match the data"
	case errors.Is(err, gzip.ErrHeader):
		return "no gzip header"
	case errors.As(err, &corrupt):
		return "the compressed data is corrupt"
	}
	return err.Error()
}

func badArchive(err error, format string, args ...any) error {
	return fail(schemas.ExitVerification, err, "the snapshot archive is not sound: "+format, args...)
}

// checked takes a whole body's verdict, at the gate: its digest and the
// archive it holds go into the termination message and the log.
func (r *run) checked(sum string, info *schemas.ArchiveInfo) {
	r.tm.SHA256, r.tm.Archive = sum, info
	r.logf("the archive is sound: %s", describeArchive(*info))
}

// describeArchive says what a checked archive holds, for the log.
func describeArchive(i schemas.ArchiveInfo) string {
	sealed := "it carries no SHA256SUMS.sealed"
	if i.SealedSums {
		sealed = "it also carries SHA256SUMS.sealed, which only the source cluster's seal opens (OpenBao checks it)"
	}
	return fmt.Sprintf("Raft snapshot %s at index %d, term %d, %s of data; its SHA256SUMS match; %s", i.ID, i.Index, i.Term, human(i.StateSize), sealed)
}
