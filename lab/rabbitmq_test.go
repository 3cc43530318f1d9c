package lab

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

// The auth responder accepts the token as user name with any password and
// nothing else; vhost, resource and topic checks are left to the broker.
func TestRabbitMQAuthHandler(t *testing.T) {
	h := rabbitMQAuthHandler("tok")
	tests := []struct{ path, want string }{
		{"/auth/user?username=tok&password=", "allow"},
		{"/auth/user?username=tok&password=anything", "allow"},
		{"/auth/user?username=toK&password=", "deny"},
		{"/auth/user?username=&password=tok", "deny"},
		{"/auth/user", "deny"},
		{"/auth/vhost?username=tok&vhost=%2Funifiedfeed%2F1&ip=198.18.0.1", "allow"},
		{"/auth/resource?username=tok&vhost=x&resource=queue&name=q&permission=read", "allow"},
		{"/auth/topic?username=tok&vhost=x&resource=topic&name=t&permission=read&routing_key=k", "allow"},
	}
	for _, tc := range tests {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
		body, _ := io.ReadAll(rec.Result().Body)
		if rec.Code != 200 || string(body) != tc.want {
			t.Errorf("GET %s: %d %q, want 200 %q", tc.path, rec.Code, body, tc.want)
		}
	}
}

func TestRabbitMQConfig(t *testing.T) {
	conf := rabbitMQConfig(5671, "/d/ca.pem", "/d/server.pem", "/d/server-key.pem", "http://127.0.0.1:4000", "/d/defs.json")
	for _, want := range []string{
		"listeners.tcp = none\n", // TLS only, as mq.betradar.com
		"listeners.ssl.default = 5671\n",
		"ssl_options.certfile = /d/server.pem\n",
		"auth_backends.1 = http\n",
		"auth_http.user_path = http://127.0.0.1:4000/auth/user\n",
		"definitions.local.path = /d/defs.json\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
}
