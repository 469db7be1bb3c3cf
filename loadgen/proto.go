package loadgen

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"
)

// HTTPishResponse is what HTTPishHandler answers to any request line.
const HTTPishResponse = "HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"

// httpishRequest is the single line HTTPishExchange sends; one line only,
// so the server reads all of it and its close is a clean FIN, not a RST
// for unread data.
const httpishRequest = "GET / HTTP/1.0\r\n"

// MaxLine bounds request lines of both handlers.
const MaxLine = 256

// MaxBulk bounds the size of one PUT or GET.
const MaxBulk = 1 << 32

// handlerIdle bounds how long a handler waits for its client.
const handlerIdle = 30 * time.Second

var (
	// ErrChecksum: the bytes that arrived are not the bytes that were sent.
	ErrChecksum = errors.New("loadgen: checksum mismatch")
	// ErrProtocol: the peer said something the protocol does not allow.
	ErrProtocol = errors.New("loadgen: protocol error")
)

// readLine reads one '\n'-terminated line of at most MaxLine bytes.
func readLine(r *bufio.Reader) (string, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > MaxLine {
			return "", fmt.Errorf("%w: line longer than %d bytes", ErrProtocol, MaxLine)
		}
		if err == nil {
			return strings.TrimRight(string(line), "\r\n"), nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
	}
}

// HTTPishHandler reads a request line, answers HTTPishResponse and closes:
// the smallest web-like backend.
func HTTPishHandler(c net.Conn) error {
	c.SetDeadline(time.Now().Add(handlerIdle))
	if _, err := readLine(bufio.NewReaderSize(c, MaxLine)); err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	_, err := io.WriteString(c, HTTPishResponse)
	return err
}

// HTTPishExchange is the client side of HTTPishHandler: one request line,
// then the whole response up to the server's close, checked byte for byte.
func HTTPishExchange(c net.Conn) error {
	if _, err := io.WriteString(c, httpishRequest); err != nil {
		return err
	}
	var buf [len(HTTPishResponse) + 1]byte
	n, err := io.ReadFull(c, buf[:])
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		if err == nil {
			return fmt.Errorf("%w: response longer than expected", ErrProtocol)
		}
		return err
	}
	if string(buf[:n]) != HTTPishResponse {
		return fmt.Errorf("%w: response %q", ErrProtocol, buf[:n])
	}
	return nil
}

// Stream returns the deterministic byte stream both ends of the bulk
// protocol generate from a seed, so neither has to keep what it sent.
func Stream(seed uint64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	copy(key[8:], "syngate loadgen bulk stream")
	return rand.NewChaCha8(key)
}

// BulkHandler serves the bulk protocol, any number of commands per
// connection until the client closes:
//
//	PUT <n>\n followed by n bytes  ->  lowercase hex SHA-256 of the bytes, \n
//	GET <n> <seed>\n               ->  the first n bytes of Stream(seed)
//
// A malformed command gets "ERR <reason>\n" and the connection is closed.
func BulkHandler(c net.Conn) error {
	r := bufio.NewReaderSize(c, 64<<10)
	for {
		c.SetDeadline(time.Now().Add(handlerIdle))
		line, err := readLine(r)
		if errors.Is(err, io.EOF) && line == "" {
			return nil
		}
		if err == nil {
			err = bulkCommand(c, r, line)
		}
		if err != nil {
			if errors.Is(err, ErrProtocol) {
				fmt.Fprintf(c, "ERR %v\n", err)
			}
			return err
		}
	}
}

func bulkCommand(c net.Conn, r *bufio.Reader, line string) error {
	f := strings.Fields(line)
	size := func(s string) (int64, error) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 || n > MaxBulk {
			return 0, fmt.Errorf("%w: bad size %q", ErrProtocol, s)
		}
		return n, nil
	}
	switch {
	case len(f) == 2 && f[0] == "PUT":
		n, err := size(f[1])
		if err != nil {
			return err
		}
		h := sha256.New()
		// Long transfers keep the deadline moving with the data.
		if _, err := io.CopyN(h, deadlineReader{c, r}, n); err != nil {
			return fmt.Errorf("read %d bytes: %w", n, err)
		}
		_, err = fmt.Fprintf(c, "%x\n", h.Sum(nil))
		return err
	case len(f) == 3 && f[0] == "GET":
		n, err := size(f[1])
		if err != nil {
			return err
		}
		seed, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			return fmt.Errorf("%w: bad seed %q", ErrProtocol, f[2])
		}
		_, err = io.CopyN(deadlineWriter{c}, Stream(seed), n)
		return err
	default:
		return fmt.Errorf("%w: unknown command %q", ErrProtocol, line)
	}
}

// deadlineReader reads through r and pushes c's deadline on each read.
type deadlineReader struct {
	c net.Conn
	r io.Reader
}

func (d deadlineReader) Read(p []byte) (int, error) {
	d.c.SetDeadline(time.Now().Add(handlerIdle))
	return d.r.Read(p)
}

// deadlineWriter writes to c and pushes its deadline on each write.
type deadlineWriter struct{ c net.Conn }

func (d deadlineWriter) Write(p []byte) (int, error) {
	d.c.SetDeadline(time.Now().Add(handlerIdle))
	return d.c.Write(p)
}

// Put sends n bytes of Stream(seed) with the PUT command over a
// connection to a BulkHandler and checks the server's checksum of them.
func Put(c net.Conn, n int64, seed uint64) error {
	if _, err := fmt.Fprintf(c, "PUT %d\n", n); err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(c, h), Stream(seed), n); err != nil {
		return fmt.Errorf("send %d bytes: %w", n, err)
	}
	line, err := readLine(bufio.NewReaderSize(c, MaxLine))
	if err != nil {
		return fmt.Errorf("read checksum: %w", err)
	}
	got, err := hex.DecodeString(line)
	if err != nil || len(got) != sha256.Size {
		return fmt.Errorf("%w: checksum line %q", ErrProtocol, line)
	}
	if want := h.Sum(nil); !bytes.Equal(got, want) {
		return fmt.Errorf("%w: server read %x, client sent %x", ErrChecksum, got, want)
	}
	return nil
}

// Get asks a BulkHandler for n bytes of Stream(seed) and checks that they
// are exactly what the client generates itself.
func Get(c net.Conn, n int64, seed uint64) error {
	if _, err := fmt.Fprintf(c, "GET %d %d\n", n, seed); err != nil {
		return err
	}
	got, want := sha256.New(), sha256.New()
	if _, err := io.CopyN(got, c, n); err != nil {
		return fmt.Errorf("receive %d bytes: %w", n, err)
	}
	io.CopyN(want, Stream(seed), n)
	if g, w := got.Sum(nil), want.Sum(nil); !bytes.Equal(g, w) {
		return fmt.Errorf("%w: received %x, expected %x", ErrChecksum, g, w)
	}
	return nil
}

// PutExchange is an Exchange doing one Put.
func PutExchange(n int64, seed uint64) Exchange {
	return func(c net.Conn) error { return Put(c, n, seed) }
}

// GetExchange is an Exchange doing one Get.
func GetExchange(n int64, seed uint64) Exchange {
	return func(c net.Conn) error { return Get(c, n, seed) }
}
