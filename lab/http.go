package lab

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// HTTPGet fetches http://addr/path from inside the namespace, for reading a
// daemon's /metrics or /healthz there. The connection is made on a thread in
// the namespace (an http.Client would dial from the caller's namespace).
func (ns *NS) HTTPGet(addr netip.AddrPort, path string, timeout time.Duration) ([]byte, error) {
	var conn net.Conn
	err := ns.Run(func() (err error) {
		conn, err = net.DialTimeout("tcp", addr.String(), timeout)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get %s%s in %s: %w", addr, path, ns, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr); err != nil {
		return nil, fmt.Errorf("get %s%s in %s: %w", addr, path, ns, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, fmt.Errorf("get %s%s in %s: %w", addr, path, ns, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("get %s%s in %s: %w", addr, path, ns, err)
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("get %s%s in %s: %s", addr, path, ns, resp.Status)
	}
	return body, nil
}
