package executor

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/openbao-restore/openbao-restore/internal/snaptest"
	"github.com/openbao-restore/openbao-restore/schemas"
)

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHoldBackReleasesTailOnlyAfterGate(t *testing.T) {
	data := snaptest.Bytes(randBytes(t, 100_000))
	sum := sha256.Sum256(data)
	const hold = 4096
	var hb *holdBack
	gated := 0
	hb = newHoldBack(iotest.HalfReader(bytes.NewReader(data)), int64(len(data)), hold, hex.EncodeToString(sum[:]), func(s string, n int64) error {
		gated++
		if s != hex.EncodeToString(sum[:]) || n != int64(len(data)) {
			t.Errorf("gate got %s %d", s, n)
		}
		if got := hb.sent.Load(); got != int64(len(data)-hold) {
			t.Errorf("at the gate %d bytes were out, want %d", got, len(data)-hold)
		}
		return nil
	})
	out, err := io.ReadAll(hb)
	if err != nil || !bytes.Equal(out, data) || gated != 1 {
		t.Fatalf("err %v, equal %v, gated %d", err, bytes.Equal(out, data), gated)
	}
}

func TestHoldBackRefuses(t *testing.T) {
	data := snaptest.Bytes(randBytes(t, 50_000))
	sum := sha256.Sum256(data)
	good := hex.EncodeToString(sum[:])
	bad := make([]byte, len(data))
	copy(bad, data)
	bad[len(bad)-3] ^= 1
	cases := []struct {
		name string
		src  io.Reader
		size int64
		want string
		code int
		hold int
	}{
		{"cut 8 bytes early", bytes.NewReader(data[:len(data)-8]), int64(len(data)), good, schemas.ExitVerification, 4096},
		{"cut early, small hold", bytes.NewReader(data[:len(data)-8]), int64(len(data)), "", schemas.ExitVerification, 64},
		{"cut at half", bytes.NewReader(data[:len(data)/2]), int64(len(data)), "", schemas.ExitVerification, 4096},
		{"longer than announced", bytes.NewReader(append(append([]byte{}, data...), 1, 2)), int64(len(data)), "", schemas.ExitVerification, 4096},
		{"bit flip vs pin", bytes.NewReader(bad), int64(len(data)), good, schemas.ExitVerification, 4096},
		{"source error", io.MultiReader(bytes.NewReader(data[:30_000]), iotest.ErrReader(errors.New("connection reset"))), int64(len(data)), "", schemas.ExitTransient, 4096},
		{"source error in tail", io.MultiReader(bytes.NewReader(data[:49_000]), iotest.ErrReader(errors.New("connection reset"))), int64(len(data)), "", schemas.ExitTransient, 4096},
		// A body the store cut short (its connection closed before
		// Content-Length bytes) is a network failure, retried; only a
		// clean early end is an object shorter than announced.
		{"body cut short by the store", io.MultiReader(bytes.NewReader(data[:30_000]), iotest.ErrReader(io.ErrUnexpectedEOF)), int64(len(data)), good, schemas.ExitTransient, 4096},
		{"body cut short in the tail", io.MultiReader(bytes.NewReader(data[:len(data)-8]), iotest.ErrReader(io.ErrUnexpectedEOF)), int64(len(data)), good, schemas.ExitTransient, 4096},
		{"body cut short, whole body held", io.MultiReader(bytes.NewReader(data[:len(data)-1]), iotest.ErrReader(io.ErrUnexpectedEOF)), int64(len(data)), "", schemas.ExitTransient, 1 << 20},
		{"whole body held", bytes.NewReader(data[:len(data)-1]), int64(len(data)), "", schemas.ExitVerification, 1 << 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			gated := false
			hb := newHoldBack(tc.src, tc.size, tc.hold, tc.want, func(string, int64) error { gated = true; return nil })
			n, err := io.Copy(io.Discard, hb)
			if err == nil || gated {
				t.Fatalf("err %v gated %v", err, gated)
			}
			if ExitCode(err) != tc.code {
				t.Fatalf("exit %d want %d: %v", ExitCode(err), tc.code, err)
			}
			if n > tc.size-int64(tc.hold) && n > 0 {
				t.Fatalf("%d bytes went out, more than size-hold %d", n, tc.size-int64(tc.hold))
			}
			if hb.released.Load() {
				t.Fatal("released")
			}
		})
	}
}

func TestHoldBackGateRefusal(t *testing.T) {
	data := snaptest.Bytes(randBytes(t, 10_000))
	hb := newHoldBack(bytes.NewReader(data), int64(len(data)), 1024, "", func(string, int64) error { return ErrAlreadySubmitted })
	n, err := io.Copy(io.Discard, hb)
	if !errors.Is(err, ErrAlreadySubmitted) || n != int64(len(data)-1024) || hb.released.Load() {
		t.Fatalf("n %d err %v", n, err)
	}
}

func TestNearest(t *testing.T) {
	keys := []string{"clusters/prod/2025-10-14-120000.snap", "clusters/prod/2025-10-15-120000.snap", "clusters/prod/other.txt", "clusters/prod/2025-10-13-120000.snap"}
	got := nearest("clusters/prod/2025-10-14-12000.snap", keys, 2)
	if len(got) != 2 || got[0] != "clusters/prod/2025-10-14-120000.snap" {
		t.Fatalf("nearest %v", got)
	}
}
