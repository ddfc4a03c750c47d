package executor

import (
	"bytes"
	"strings"
	"testing"

	"github.com/openbao-restore/openbao-restore/internal/snaptest"
	"github.com/openbao-restore/openbao-restore/schemas"
)

// feed runs an archive through the check as the stream does: in chunks,
// then the verdict.
func feed(b []byte) (schemas.ArchiveInfo, error) {
	a := newArchiveCheck()
	for len(b) > 0 {
		k := min(len(b), 1000)
		_, _ = a.Write(b[:k])
		b = b[k:]
	}
	return a.Close()
}

func TestArchiveSound(t *testing.T) {
	state := bytes.Repeat([]byte("state "), 50_000)
	info, err := feed(snaptest.Bytes(state))
	if err != nil {
		t.Fatal(err)
	}
	want := schemas.ArchiveInfo{ID: "2-42-1700000000000", Index: 42, Term: 2, StateSize: int64(len(state))}
	if info != want {
		t.Fatalf("info %+v, want %+v", info, want)
	}
	// With the seal's copy of the sums, as a cluster with a seal writes.
	ms := snaptest.Members(state)
	ms = append(ms, snaptest.Member{Name: "SHA256SUMS.sealed", Data: []byte("opaque")})
	if info, err := feed(snaptest.Pack(ms...)); err != nil || !info.SealedSums {
		t.Fatalf("sealed sums: %+v %v", info, err)
	}
}

// Every way an archive can be unsound is refused with exit 6, and the
// message says where.
func TestArchiveUnsound(t *testing.T) {
	state := randBytes(t, 200_000)
	sound := snaptest.Bytes(state)
	members := func(change func([]snaptest.Member) []snaptest.Member) []byte {
		return snaptest.Pack(change(snaptest.Members(state))...)
	}
	flipped := append([]byte{}, sound...)
	flipped[len(flipped)/2] ^= 0x10
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"not gzip", []byte("PK\x03\x04 a zip file, not a snapshot"), "not a gzip stream"},
		{"empty", nil, "not a gzip stream"},
		{"cut in half", sound[:len(sound)/2], "ends early, in its member state.bin"},
		{"cut in the trailer", sound[:len(sound)-8], "ends early, at its end"},
		{"cut after one byte of trailer", sound[:len(sound)-7], "ends early, at its end"},
		{"bit flipped", flipped, "damaged"},
		{"bytes after the gzip stream", append(append([]byte{}, sound...), "junk"...), "bytes follow the end of its gzip stream"},
		{"data changed, sums not", members(func(ms []snaptest.Member) []snaptest.Member {
			ms[1].Data = append([]byte{}, state...)
			ms[1].Data[7] ^= 1
			return ms
		}), "the SHA-256 of its member state.bin does not match SHA256SUMS"},
		{"meta changed, sums not", members(func(ms []snaptest.Member) []snaptest.Member {
			ms[0].Data = snaptest.Meta(int64(len(state)) + 1)
			return ms
		}), "the SHA-256 of its member meta.json does not match"},
		{"meta's size wrong", members(func(ms []snaptest.Member) []snaptest.Member {
			ms[0].Data = snaptest.Meta(1)
			ms[2].Data = snaptest.Sums(ms[0], ms[1])
			return ms
		}), "meta.json says the data is 1 bytes, but state.bin holds 200000"},
		{"no SHA256SUMS", members(func(ms []snaptest.Member) []snaptest.Member { return ms[:2] }), "its member SHA256SUMS is missing"},
		{"no state.bin", members(func(ms []snaptest.Member) []snaptest.Member { return []snaptest.Member{ms[0], ms[2]} }), "its member state.bin is missing"},
		{"sums omit state.bin", members(func(ms []snaptest.Member) []snaptest.Member {
			ms[2].Data = snaptest.Sums(ms[0])
			return ms
		}), "SHA256SUMS does not list state.bin"},
		{"sums list a stranger", members(func(ms []snaptest.Member) []snaptest.Member {
			ms[2].Data = append(ms[2].Data, snaptest.Sums(snaptest.Member{Name: "evil"})...)
			return ms
		}), `lists "evil"`},
		{"sums malformed", members(func(ms []snaptest.Member) []snaptest.Member {
			ms[2].Data = []byte("not a sum\n")
			return ms
		}), "line 1 of its member SHA256SUMS"},
		{"unexpected member", members(func(ms []snaptest.Member) []snaptest.Member {
			return append(ms, snaptest.Member{Name: "../../etc/passwd", Data: []byte("x")})
		}), `unexpected member "../../etc/passwd"`},
		{"member twice", members(func(ms []snaptest.Member) []snaptest.Member { return append(ms, ms[0]) }), "holds the member meta.json twice"},
		{"meta too large", members(func(ms []snaptest.Member) []snaptest.Member {
			ms[0].Data = bytes.Repeat([]byte(" "), smallMember+1)
			return ms
		}), "meta.json is larger than 8192 bytes"},
		{"meta not JSON", members(func(ms []snaptest.Member) []snaptest.Member {
			ms[0].Data = []byte("{")
			ms[2].Data = snaptest.Sums(ms[0], ms[1])
			return ms
		}), "meta.json is not valid JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := feed(c.data)
			t.Log(err)
			if ExitCode(err) != schemas.ExitVerification || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("exit %d: %v\nwant %q", ExitCode(err), err, c.want)
			}
		})
	}
}
