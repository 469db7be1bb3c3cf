package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
)

// pipe runs handler on one end of an in-memory connection and returns the
// other end and the handler's result.
func pipe(t *testing.T, handler Handler) (net.Conn, <-chan error) {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan error, 1)
	go func() {
		defer server.Close()
		done <- handler(server)
	}()
	t.Cleanup(func() { client.Close() })
	return client, done
}

func TestBulkRoundTripOverPipe(t *testing.T) {
	c, done := pipe(t, BulkHandler)
	for _, n := range []int64{0, 1, 4095, 1 << 20} {
		if err := Put(c, n, uint64(n)); err != nil {
			t.Fatalf("put %d: %v", n, err)
		}
		if err := Get(c, n, uint64(n)+7); err != nil {
			t.Fatalf("get %d: %v", n, err)
		}
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatalf("handler: %v", err)
	}
}

func TestStreamIsDeterministic(t *testing.T) {
	a, b, c := make([]byte, 1000), make([]byte, 1000), make([]byte, 1000)
	io.ReadFull(Stream(1), a)
	io.ReadFull(Stream(1), b)
	io.ReadFull(Stream(2), c)
	if !bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Fatal("Stream must repeat for a seed and differ across seeds")
	}
}

func TestBulkDetectsCorruption(t *testing.T) {
	// A server that streams another seed's bytes.
	c, _ := pipe(t, func(s net.Conn) error {
		line, err := readLine(bufio.NewReader(s))
		if err != nil {
			return err
		}
		var n int64
		var seed uint64
		fmt.Sscanf(line, "GET %d %d", &n, &seed)
		_, err = io.CopyN(s, Stream(seed+1), n)
		return err
	})
	if err := Get(c, 1<<16, 5); !errors.Is(err, ErrChecksum) {
		t.Fatalf("get of wrong bytes: %v, want ErrChecksum", err)
	}

	// A server that flips one byte of what it was sent.
	c, _ = pipe(t, func(s net.Conn) error {
		r := bufio.NewReader(s)
		line, err := readLine(r)
		if err != nil {
			return err
		}
		var n int64
		fmt.Sscanf(line, "PUT %d", &n)
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		buf[n/2] ^= 1
		return bulkCommand(s, bufio.NewReader(io.MultiReader(bytes.NewReader(buf))), line)
	})
	if err := Put(c, 1<<16, 5); !errors.Is(err, ErrChecksum) {
		t.Fatalf("put answered with a wrong sum: %v, want ErrChecksum", err)
	}
}

func TestBulkRejectsBadCommands(t *testing.T) {
	for _, cmd := range []string{"HELLO\n", "PUT -1\n", "PUT 99999999999999\n", "GET 10\n", "GET 10 x\n", strings.Repeat("A", MaxLine+10) + "\n"} {
		c, done := pipe(t, BulkHandler)
		go io.WriteString(c, cmd)
		reply, _ := io.ReadAll(c)
		if !strings.HasPrefix(string(reply), "ERR ") {
			t.Errorf("%.20q: reply %q", cmd, reply)
		}
		if err := <-done; !errors.Is(err, ErrProtocol) {
			t.Errorf("%.20q: handler returned %v", cmd, err)
		}
	}
}

func TestHTTPishOverPipe(t *testing.T) {
	c, done := pipe(t, HTTPishHandler)
	if err := HTTPishExchange(c); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A wrong answer is caught.
	c, _ = pipe(t, func(s net.Conn) error {
		readLine(bufio.NewReader(s))
		_, err := io.WriteString(s, "HTTP/1.0 500 Oops\r\n\r\n")
		return err
	})
	if err := HTTPishExchange(c); !errors.Is(err, ErrProtocol) {
		t.Fatalf("wrong response: %v, want ErrProtocol", err)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Kind
	}{
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, Refused},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), Reset},
		{fmt.Errorf("write: %w", syscall.EPIPE), Reset},
		{fmt.Errorf("x: %w", os.ErrDeadlineExceeded), Timeout},
		{&net.OpError{Op: "dial", Err: syscall.ETIMEDOUT}, Timeout},
		{fmt.Errorf("x: %w", context.Canceled), Canceled},
		{ErrChecksum, Other},
		{io.ErrUnexpectedEOF, Other},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
