package tcpcheck

import (
	"crypto/tls"
	"fmt"
	"time"
)

// echoVolume is what a data test sends through a TCP echo target.
const echoVolume = 4 << 20

// echoProtocol is plain TCP; requests are lines an echo service returns.
type echoProtocol struct{}

func (echoProtocol) tlsConfig(DialConfig) *tls.Config { return nil }

func (echoProtocol) request(DialConfig) []byte { return []byte("hopcheck\n") }

func (echoProtocol) read(cn *Conn) { readRaw(cn) }

func (echoProtocol) ackOnly() bool { return false }

// transfer writes echoVolume bytes from a goroutine while the reader
// counts what comes back.
func (echoProtocol) transfer(cn *Conn, t transferSpec) (transfer, error) {
	et := echoTransfer{written: make(chan error, 1)}
	go func() {
		chunk := make([]byte, 32<<10)
		for sent := 0; sent < echoVolume; sent += len(chunk) {
			if err := cn.write(chunk, cn.now().Add(t.stallAfter+5*time.Second)); err != nil {
				et.written <- err
				return
			}
		}
		et.written <- nil
	}()
	return et, nil
}

// readRaw delivers bytes as they arrive (echo, AMQP), then the end.
func readRaw(cn *Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := countingReader{cn}.Read(buf)
		at := cn.now()
		if n > 0 {
			cn.events <- event{at: at, data: append([]byte(nil), buf[:n]...)}
		}
		if err != nil {
			cn.events <- event{at: at, err: err}
			return
		}
	}
}

// echoTransfer is echoVolume bytes sent and expected back.
type echoTransfer struct{ written chan error }

func (echoTransfer) complete(_ event, moved int64) (bool, int) { return moved >= echoVolume, 0 }

func (echoTransfer) due(moved int64, _ *bodyCut) (int64, int64) { return moved, echoVolume }

func (echoTransfer) path() string { return "" }

func (echoTransfer) truncation(e transferEnd, _ *bodyCut) string {
	return fmt.Sprintf("the transfer ended with a FIN (end of stream) after %d of %d bytes echoed", e.got, e.want)
}

// writeEnd: after a RST the writer returns at once.
func (t echoTransfer) writeEnd() error {
	select {
	case err := <-t.written:
		return err
	case <-time.After(100 * time.Millisecond):
		return nil
	}
}
