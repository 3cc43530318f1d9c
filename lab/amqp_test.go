package lab

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/hopcheck/hopcheck/internal/amqp"
)

// The lab's Connection.Start encodes and decodes back unchanged (the codec
// has its own fixture tests in internal/amqp).
func TestLabConnectionStart(t *testing.T) {
	frame, err := amqp.EncodeStart(LabConnectionStart())
	if err != nil {
		t.Fatal(err)
	}
	// RabbitMQ's nine server capabilities under the lab's product name.
	want := "\x01\x00\x00\x00\x00\x01\x1e" + // method frame, channel 0, 286 bytes
		"\x00\x0a\x00\x0a\x00\x09" + // connection.start 0-9
		"\x00\x00\x01\x02" + // server-properties, 258 bytes
		"\x07productS\x00\x00\x00\x0chopcheck lab" +
		"\x08platformS\x00\x00\x00\x02Go" +
		"\x0ccapabilitiesF\x00\x00\x00\xc7" + // 199 bytes
		"\x12publisher_confirmst\x01" +
		"\x1aexchange_exchange_bindingst\x01" +
		"\x0abasic.nackt\x01" +
		"\x16consumer_cancel_notifyt\x01" +
		"\x12connection.blockedt\x01" +
		"\x13consumer_prioritiest\x01" +
		"\x1cauthentication_failure_closet\x01" +
		"\x10per_consumer_qost\x01" +
		"\x0fdirect_reply_tot\x01" +
		"\x00\x00\x00\x05PLAIN\x00\x00\x00\x05en_US\xce"
	if !bytes.Equal(frame, []byte(want)) {
		t.Fatalf("got  % x\nwant % x", frame, want)
	}
	fr, n, err := amqp.DecodeFrame(frame)
	if err != nil || n != len(frame) || fr.Type != amqp.FrameMethod || fr.Channel != 0 {
		t.Fatalf("frame %+v (%d of %d bytes): %v", fr, n, len(frame), err)
	}
	got, err := amqp.DecodeStart(fr.Payload)
	if err != nil || !reflect.DeepEqual(got, LabConnectionStart()) {
		t.Fatalf("got %+v (%v)", got, err)
	}
}
