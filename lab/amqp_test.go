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
	// The bytes the lab has always sent (its fuzz seed in internal/amqp).
	want := "\x01\x00\x00\x00\x00\x00v\x00\n\x00\n\x00\t\x00\x00\x00Z\aproductS\x00\x00\x00\fhopcheck lab\bplatformS\x00\x00\x00\x02Go" +
		"\fcapabilitiesF\x00\x00\x00\x1f\x1cauthentication_failure_closet\x01\x00\x00\x00\x05PLAIN\x00\x00\x00\x05en_US\xce"
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
