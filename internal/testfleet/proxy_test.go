package testfleet

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// echoServer answers every line with the same line.
func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, timeout time.Duration) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	_ = c.SetDeadline(start.Add(timeout))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return 0, err
	}
	line, err := r.ReadString('\n')
	if err == nil && line != "ping\n" {
		t.Fatalf("echo %q", line)
	}
	return time.Since(start), err
}

func TestProxyDelaysFreezesAndCuts(t *testing.T) {
	p, err := NewProxy(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	c1, r1 := dial()
	if _, err := roundTrip(t, c1, r1, 5*time.Second); err != nil {
		t.Fatalf("plain round trip: %v", err)
	}

	p.SetDelay(300 * time.Millisecond)
	if d, err := roundTrip(t, c1, r1, 5*time.Second); err != nil || d < 300*time.Millisecond {
		t.Fatalf("delayed round trip took %s (%v), want >= 300ms", d, err)
	}
	p.SetDelay(0)

	p.Freeze()
	if _, err := roundTrip(t, c1, r1, 500*time.Millisecond); err == nil {
		t.Fatal("a frozen connection still answered")
	}
	c2, r2 := dial()
	if _, err := roundTrip(t, c2, r2, 5*time.Second); err != nil {
		t.Fatalf("a new connection after the freeze: %v", err)
	}

	p.Cut()
	if _, err := roundTrip(t, c2, r2, 5*time.Second); err == nil {
		t.Fatal("a cut connection still answered")
	}
	c3, r3 := dial()
	if _, err := roundTrip(t, c3, r3, 5*time.Second); err != nil {
		t.Fatalf("a new connection after the cut: %v", err)
	}
}
