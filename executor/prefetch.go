package executor

import (
	"io"
	"sync"
)

// prefetch reads the source ahead of its reader and passes it through a
// pipeline of stages, each in a goroutine of its own: one reads the object
// store, then each stage (the SHA-256 of the object, the archive's check)
// takes every chunk in order, while the reader (the HTTP transport) writes
// what has been through them all. SHA-256 and the archive's decompression
// are the costliest stages and cannot be split, so each gets a goroutine
// that does nothing else; the reads and writes run beside them instead of
// one after the other. Memory is bounded by the chunk pool, whatever the
// object's size.
type prefetch struct {
	ch     chan chunk // hashed chunks, in order, for Read
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
	// prefetchChunks is the pool: one being read, one in each stage, one
	// being sent, the rest queued between the stages.
	prefetchChunks = 8
)

// newPrefetch starts the pipeline. Stages must not fail: a stage that
// finds a fault keeps it for its owner to read.
func newPrefetch(src io.Reader, stages ...io.Writer) *prefetch {
	p := &prefetch{ch: make(chan chunk, prefetchChunks), free: make(chan []byte, prefetchChunks), done: make(chan struct{})}
	for range prefetchChunks {
		p.free <- make([]byte, prefetchChunk)
	}
	// Each stage reads from the channel before it and writes to the next;
	// the last writes to p.ch, which Read takes.
	next := p.ch
	for i := len(stages) - 1; i >= 0; i-- {
		in := make(chan chunk, prefetchChunks)
		go p.stageLoop(in, next, stages[i])
		next = in
	}
	go p.readLoop(src, next)
	return p
}

// readLoop fills free chunks from the source, in order; an error (io.EOF
// at the end) is passed on after the data read before it.
func (p *prefetch) readLoop(src io.Reader, out chan<- chunk) {
	for {
		var buf []byte
		select {
		case buf = <-p.free:
		case <-p.done:
			return
		}
		n, err := fill(src, buf)
		if n > 0 {
			select {
			case out <- chunk{b: buf[:n]}:
			case <-p.done:
				return
			}
		} else {
			p.free <- buf
		}
		if err != nil {
			select {
			case out <- chunk{err: err}:
			case <-p.done:
			}
			return
		}
	}
}

// fill reads into buf until it is full or the source fails, and returns
// the source's own error. Not io.ReadFull: it reports a source that ends
// mid-buffer as io.ErrUnexpectedEOF, the very error an HTTP body gives when
// the store closes the connection before Content-Length bytes. Telling the
// two apart is the point: a clean early EOF is an object shorter than its
// HEAD said (permanent), a cut body is a network failure (retried).
func fill(src io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := src.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// stageLoop writes each chunk to its stage before it hands it on: by the
// time Read returns the source's EOF, every stage has taken every byte.
func (p *prefetch) stageLoop(in <-chan chunk, out chan<- chunk, w io.Writer) {
	for {
		var c chunk
		select {
		case c = <-in:
		case <-p.done:
			return
		}
		if len(c.b) > 0 {
			_, _ = w.Write(c.b)
		}
		select {
		case out <- c:
		case <-p.done:
			return
		}
		if c.err != nil {
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

// Close stops the goroutines. A goroutine blocked in the source's Read ends
// when the caller closes the source.
func (p *prefetch) Close() { p.once.Do(func() { close(p.done) }) }
