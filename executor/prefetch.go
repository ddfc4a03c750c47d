package executor

import (
	"errors"
	"hash"
	"io"
	"sync"
)

// prefetch reads the source and hashes it in its own goroutine, a few
// chunks ahead of the reader. SHA-256 then runs on one core while the HTTP
// transport writes on another, instead of one after the other: on a 2-core
// machine this roughly doubles the stream's throughput. Memory is bounded by
// the chunk pool, whatever the object's size.
type prefetch struct {
	ch     chan chunk
	free   chan []byte
	done   chan struct{}
	once   sync.Once
	cur    []byte
	curBuf []byte
	err    error
}

type chunk struct {
	b   []byte
	err error
}

const (
	prefetchChunk = 256 << 10
	prefetchDepth = 4
)

func newPrefetch(src io.Reader, h hash.Hash) *prefetch {
	p := &prefetch{ch: make(chan chunk, prefetchDepth), free: make(chan []byte, prefetchDepth+2), done: make(chan struct{})}
	for range prefetchDepth + 2 {
		p.free <- make([]byte, prefetchChunk)
	}
	go p.loop(src, h)
	return p
}

func (p *prefetch) loop(src io.Reader, h hash.Hash) {
	for {
		var buf []byte
		select {
		case buf = <-p.free:
		case <-p.done:
			return
		}
		n, err := io.ReadFull(src, buf)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		if n > 0 {
			// Hashed before it is handed on: by the time the reader sees
			// EOF, the hash covers every byte.
			h.Write(buf[:n])
			select {
			case p.ch <- chunk{b: buf[:n]}:
			case <-p.done:
				return
			}
		}
		if err != nil {
			select {
			case p.ch <- chunk{err: err}:
			case <-p.done:
			}
			return
		}
	}
}

func (p *prefetch) Read(b []byte) (int, error) {
	if len(p.cur) == 0 {
		if p.curBuf != nil {
			p.free <- p.curBuf[:cap(p.curBuf)]
			p.curBuf = nil
		}
		if p.err != nil {
			return 0, p.err
		}
		c := <-p.ch
		if c.err != nil {
			p.err = c.err
			return 0, c.err
		}
		p.cur, p.curBuf = c.b, c.b
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// Close stops the goroutine. A goroutine blocked in the source's Read ends
// when the caller closes the source.
func (p *prefetch) Close() { p.once.Do(func() { close(p.done) }) }
