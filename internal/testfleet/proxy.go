package testfleet

import (
	"net"
	"strconv"
	"sync"
	"time"
)

// Proxy is a TCP proxy in front of one cluster's apiserver, for fault tests: a client
// pointed at it (TLS passes through untouched; the apiserver's certificate is for
// 127.0.0.1, whatever the port) can be given a one-way delay, have its open connections
// frozen while new ones pass, or be cut off. Writes made straight to the apiserver are
// unaffected.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	delay  time.Duration
	conns  map[*proxyConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// proxyConn is one client connection and its upstream.
type proxyConn struct {
	client, upstream net.Conn
	frozen           chan struct{} // closed when the connection is frozen
	freezeOnce       sync.Once
	done             chan struct{} // closed when the connection is closed
	closeOnce        sync.Once
}

func (c *proxyConn) close() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.client.Close()
		c.upstream.Close()
	})
}

func (c *proxyConn) freeze() { c.freezeOnce.Do(func() { close(c.frozen) }) }

// StartProxy starts a proxy to the cluster's apiserver on a free loopback port.
func (c *Cluster) StartProxy() (*Proxy, error) {
	return NewProxy("127.0.0.1:" + strconv.Itoa(c.APIPort))
}

// NewProxy starts a proxy to target (host:port) on a free loopback port.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[*proxyConn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Server is the proxy's URL, to use in place of the cluster's.
func (p *Proxy) Server() string { return "https://" + p.Addr() }

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetDelay delays everything the apiserver sends from now on by d (0: none). Requests
// are not delayed: an event and the answer to a request sent at the same moment reach the
// client d late.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Freeze stops every connection open now, in both directions, without closing it (a
// connection whose packets are silently dropped). New connections pass.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.freeze()
	}
}

// Cut closes every open connection.
func (p *Proxy) Cut() {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// Connections is the number of connections open now.
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.Cut()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		upstream, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			client.Close()
			continue
		}
		c := &proxyConn{client: client, upstream: upstream, frozen: make(chan struct{}), done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.close()
			return
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			p.forward(c, c.upstream, c.client, false)
		}()
		go func() {
			defer p.wg.Done()
			p.forward(c, c.client, c.upstream, true)
			p.mu.Lock()
			delete(p.conns, c)
			p.mu.Unlock()
		}()
	}
}

// chunk is bytes read from one side, due on the other at a time.
type chunk struct {
	data []byte
	due  time.Time
}

// forward copies src to dst until either ends, delaying by the proxy's delay when
// delayed, and holding everything once the connection is frozen.
func (p *Proxy) forward(c *proxyConn, dst, src net.Conn, delayed bool) {
	defer c.close()
	queue := make(chan chunk, 4096)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for ch := range queue {
			if d := time.Until(ch.due); d > 0 {
				select {
				case <-time.After(d):
				case <-c.done:
					return
				}
			}
			select {
			case <-c.frozen:
				<-c.done
				return
			default:
			}
			if _, err := dst.Write(ch.data); err != nil {
				c.close()
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			select {
			case <-c.frozen:
				// Frozen: stop reading too, so that the sender's buffers fill up.
				close(queue)
				<-c.done
				<-writerDone
				return
			default:
			}
			due := time.Now()
			if delayed {
				p.mu.Lock()
				due = due.Add(p.delay)
				p.mu.Unlock()
			}
			select {
			case queue <- chunk{data: append([]byte(nil), buf[:n]...), due: due}:
			case <-c.done:
			}
		}
		if err != nil { // EOF, or closed by the other direction or Cut
			close(queue)
			<-writerDone
			return
		}
	}
}
