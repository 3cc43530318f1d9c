package tcpcheck

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hopcheck/hopcheck/lab"
)

func TestParseWhoamiVHost(t *testing.T) {
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{"uof", `<?xml version="1.0" encoding="UTF-8"?><bookmaker_details response_code="OK" expire_at="2026-01-01T00:00:00Z" bookmaker_id="123" virtual_host="/unifiedfeed/123"/>`, "/unifiedfeed/123", false},
		{"no attribute", `<bookmaker_details bookmaker_id="1"/>`, "", true},
		{"error document", `<error code="401"/>`, "", true},
		{"not xml", `nope`, "", true},
		{"control character", `<bookmaker_details virtual_host="/a&#10;b"/>`, "", true},
		{"too long", `<bookmaker_details virtual_host="/` + strings.Repeat("x", 255) + `"/>`, "", true},
	}
	for _, tc := range tests {
		got, err := ParseWhoamiVHost([]byte(tc.in))
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%s: %q %v", tc.name, got, err)
		}
	}
}

func FuzzParseWhoamiVHost(f *testing.F) {
	f.Add([]byte(`<bookmaker_details virtual_host="/unifiedfeed/1"/>`))
	f.Add([]byte(`<error code="401"/>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseWhoamiVHost(b)
		if err == nil && CheckAMQPVHost(v) != nil {
			t.Fatalf("accepted %q", v)
		}
	})
}

func TestFetchAMQPVHostFromLab(t *testing.T) {
	_, pool, https := labBroker(t, "s3cret")
	target, err := ParseTarget(fmt.Sprintf("https://%s:%d", lab.ServerName, https.Port()))
	if err != nil {
		t.Fatal(err)
	}
	job := Job{Target: target, Addr: https.Addr()}
	d := DefaultDialConfig()
	d.RootCAs, d.Token = pool, "s3cret"
	v, err := FetchAMQPVHost(context.Background(), d, job)
	if err != nil || v != lab.VHost {
		t.Fatalf("vhost %q %v, want %s", v, err, lab.VHost)
	}
	d.Token = "wrong-token"
	if _, err := FetchAMQPVHost(context.Background(), d, job); err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "wrong-token") {
		t.Fatalf("wrong token: %v", err)
	}
}
