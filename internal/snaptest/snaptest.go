// Package snaptest writes archives in the shape of an OpenBao Raft snapshot
// (a gzip'd tar of meta.json, state.bin and SHA256SUMS) around data of the
// test's choosing, for tests and benchmarks whose object store serves
// something other than a real OpenBao's snapshot: the executor checks the
// archive's shape and sums before it sends a byte of its tail.
package snaptest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Write writes an archive whose state.bin is size bytes of state, gzip'd
// at the given level (gzip.NoCompression is fastest; random data does not
// compress, as OpenBao's encrypted data mostly does not).
func Write(w io.Writer, state io.Reader, size int64, level int) error {
	zw, err := gzip.NewWriterLevel(w, level)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	now := time.Unix(1_700_000_000, 0)
	put := func(name string, size int64, r io.Reader) ([]byte, error) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: size, ModTime: now}); err != nil {
			return nil, err
		}
		h := sha256.New()
		if _, err := io.CopyN(io.MultiWriter(tw, h), r, size); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return h.Sum(nil), nil
	}
	meta := Meta(size)
	metaSum, err := put("meta.json", int64(len(meta)), bytes.NewReader(meta))
	if err != nil {
		return err
	}
	stateSum, err := put("state.bin", size, state)
	if err != nil {
		return err
	}
	sums := fmt.Sprintf("%x  meta.json\n%x  state.bin\n", metaSum, stateSum)
	if _, err := put("SHA256SUMS", int64(len(sums)), bytes.NewReader([]byte(sums))); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// Member is one file of an archive.
type Member struct {
	Name string
	Data []byte
}

// Members are the members of a sound archive around state, in OpenBao's
// order; tests change them to build damaged ones.
func Members(state []byte) []Member {
	meta := Meta(int64(len(state)))
	ms := []Member{{"meta.json", meta}, {"state.bin", state}}
	return append(ms, Member{"SHA256SUMS", Sums(ms...)})
}

// Meta is a meta.json for size bytes of data.
func Meta(size int64) []byte {
	meta, _ := json.Marshal(map[string]any{"Version": 1, "ID": "2-42-1700000000000", "Index": 42, "Term": 2, "Size": size})
	return append(meta, '\n')
}

// Sums is the SHA256SUMS of members.
func Sums(ms ...Member) []byte {
	var b bytes.Buffer
	for _, m := range ms {
		fmt.Fprintf(&b, "%x  %s\n", sha256.Sum256(m.Data), m.Name)
	}
	return b.Bytes()
}

// Pack is the gzip'd tar of members, at the default level.
func Pack(ms ...Member) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	for _, m := range ms {
		must(tw.WriteHeader(&tar.Header{Name: m.Name, Mode: 0o600, Size: int64(len(m.Data)), ModTime: time.Unix(1_700_000_000, 0)}))
		_, err := tw.Write(m.Data)
		must(err)
	}
	must(tw.Close())
	must(zw.Close())
	return b.Bytes()
}

// Bytes is a sound archive around state.
func Bytes(state []byte) []byte { return Pack(Members(state)...) }

func must(err error) {
	if err != nil {
		panic(err) // writing to memory does not fail
	}
}

// Unpack reads the members of an archive, such as a real OpenBao's
// snapshot, so that a test can damage one and Pack them again.
func Unpack(archive []byte) ([]Member, error) {
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	var ms []Member
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return ms, nil
		}
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		ms = append(ms, Member{Name: h.Name, Data: b})
	}
}
