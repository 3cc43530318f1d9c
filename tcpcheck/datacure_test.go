package tcpcheck

import (
	"strings"
	"testing"
	"time"
)

func TestDownloadStallFinding(t *testing.T) {
	stalled := stalledDownload{Bytes: 65536, AdvMSS: 1460, StallAfter: 5 * time.Second}
	cases := []struct {
		name        string
		st          stalledDownload
		cure        *TransferCure
		wantKind    string
		wantBracket []int
		wantEv      string
	}{
		{"clamped retry completes: black hole", stalled,
			&TransferCure{ClampMSS: 1200, AdvMSS: 1200, Outcome: OutcomeOK, Bytes: 8 << 20, DurationS: 0.4},
			KindPMTUBlackhole, []int{1240, 1499}, "advertising MSS 1200 (clamped) completed: 8388608 bytes"},
		{"IPv6 headers", stalledDownload{Bytes: 1, AdvMSS: 1440, StallAfter: time.Second, V6: true},
			&TransferCure{ClampMSS: 1200, AdvMSS: 1200, Outcome: OutcomeOK, Bytes: 10},
			KindPMTUBlackhole, []int{1260, 1499}, "path MTU 1260-1499"},
		{"retry SYN's MSS unknown: the clamp counts", stalled,
			&TransferCure{ClampMSS: 1200, Outcome: OutcomeOK, Bytes: 10},
			KindPMTUBlackhole, []int{1240, 1499}, "stalled after 65536 bytes"},
		{"retry stalls too: no black hole", stalled,
			&TransferCure{ClampMSS: 1200, AdvMSS: 1200, Outcome: OutcomeTimeout, Stalled: true, Bytes: 4096},
			KindDataStall, nil, "stalled too, after 4096 bytes"},
		{"retry reset: no verdict", stalled,
			&TransferCure{ClampMSS: 1200, AdvMSS: 1200, Outcome: OutcomeReset, Error: "connection reset by peer"},
			KindDataStall, nil, "no verdict on a PMTU black hole"},
		{"retry completes without a smaller MSS: not shown", stalled,
			&TransferCure{ClampMSS: 1200, AdvMSS: 1460, Outcome: OutcomeOK, Bytes: 10},
			KindDataStall, nil, "segment size is not shown to be the cause"},
		{"stalled connection already small: not tried", stalledDownload{Bytes: 5, AdvMSS: 1200, StallAfter: time.Second}, nil,
			KindDataStall, nil, "not tried"},
		{"not tried (cancelled)", stalled, nil, KindDataStall, nil, "no FIN or RST"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := downloadStallFinding("https://api.example", "198.18.0.1:443", tc.st, tc.cure, []string{"TCP_INFO: x"})
			if f.Kind != tc.wantKind {
				t.Fatalf("kind %s, want %s: %+v", f.Kind, tc.wantKind, f)
			}
			if len(f.MTUBracket) != len(tc.wantBracket) || (len(f.MTUBracket) == 2 && (f.MTUBracket[0] != tc.wantBracket[0] || f.MTUBracket[1] != tc.wantBracket[1])) {
				t.Errorf("bracket %v, want %v", f.MTUBracket, tc.wantBracket)
			}
			ev := strings.Join(f.Evidence, " | ")
			if !strings.Contains(ev, tc.wantEv) || !strings.Contains(ev, "TCP_INFO: x") {
				t.Errorf("evidence %q lacks %q or the TCP_INFO line", ev, tc.wantEv)
			}
			if f.Kind == KindPMTUBlackhole {
				if f.Direction != "toward-client" || !strings.Contains(f.Advice, "TCPMSS") || !strings.Contains(f.Advice, "advmss") {
					t.Errorf("black hole %+v: want toward-client and the MSS clamping fix", f)
				}
			} else if f.Direction != "" {
				t.Errorf("a data-stall with direction %q", f.Direction)
			}
		})
	}
}

func TestCurable(t *testing.T) {
	for _, tc := range []struct {
		adv  int
		want bool
	}{{0, false}, {cureMSS, false}, {cureMSS + 1, true}, {1460, true}} {
		if got := curable(stalledDownload{AdvMSS: tc.adv}); got != tc.want {
			t.Errorf("curable(adv %d) = %v, want %v", tc.adv, got, tc.want)
		}
	}
}
