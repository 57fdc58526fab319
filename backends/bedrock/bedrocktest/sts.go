package bedrocktest

import (
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// STS is a local fake of AWS STS's AssumeRole for tests (point the SDK at
// it with AWS_ENDPOINT_URL_STS): it verifies the caller's SigV4 signature
// (service sts) over the known test credentials, checks the role ARN and
// external id, and answers with temporary credentials that it also allows
// on a Bedrock fake, valid for Lifetime.
type STS struct {
	URL string
	// Role and ExternalID the caller must ask for ("" external id: none).
	Role, ExternalID string
	// Lifetime of issued credentials.
	Lifetime time.Duration
	// Issued counts credentials issued; Refused refused calls.
	Issued, Refused atomic.Int64

	bedrock *Server
	srv     *http.Server
	mu      sync.Mutex
	last    aws.Credentials
}

// StartSTS runs the fake until the test ends; the credentials it issues,
// valid for lifetime, are allowed on bedrock.
func StartSTS(t testing.TB, bedrock *Server, role, externalID string, lifetime time.Duration) *STS {
	t.Helper()
	s := &STS{Role: role, ExternalID: externalID, Lifetime: lifetime, bedrock: bedrock}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.URL = "http://" + lis.Addr().String()
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(lis) }()
	t.Cleanup(func() { _ = s.srv.Close() })
	return s
}

// Last is the last issued credentials.
func (s *STS) Last() aws.Credentials {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func stsError(w http.ResponseWriter, code int, kind, msg string) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>fake</RequestId></ErrorResponse>`, kind, msg)
}

func (s *STS) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	kind, msg, _ := VerifySigV4(r, body, "us-east-1", "sts", func(id string) (aws.Credentials, bool) {
		if id == AccessKeyID {
			return aws.Credentials{AccessKeyID: AccessKeyID, SecretAccessKey: SecretAccessKey}, true
		}
		return aws.Credentials{}, false
	})
	if kind != "" {
		s.Refused.Add(1)
		stsError(w, http.StatusForbidden, kind, msg)
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("Action") != "AssumeRole" {
		s.Refused.Add(1)
		stsError(w, http.StatusBadRequest, "InvalidAction", "want AssumeRole")
		return
	}
	if form.Get("RoleArn") != s.Role || form.Get("ExternalId") != s.ExternalID || form.Get("RoleSessionName") == "" {
		s.Refused.Add(1)
		stsError(w, http.StatusForbidden, "AccessDenied", "User is not authorized to perform: sts:AssumeRole on resource")
		return
	}
	n := s.Issued.Add(1)
	c := aws.Credentials{AccessKeyID: fmt.Sprintf("ASIAFAKESESSION%05d", n), SecretAccessKey: fmt.Sprintf("session-secret-%d", n),
		SessionToken: fmt.Sprintf("session-token-%d-%d", n, time.Now().UnixNano())}
	s.mu.Lock()
	s.last = c
	s.mu.Unlock()
	s.bedrock.Allow(c)
	type creds struct {
		AccessKeyId, SecretAccessKey, SessionToken string
		Expiration                                 string
	}
	type result struct {
		XMLName     xml.Name `xml:"AssumeRoleResponse"`
		Xmlns       string   `xml:"xmlns,attr"`
		Credentials creds    `xml:"AssumeRoleResult>Credentials"`
		RoleID      string   `xml:"AssumeRoleResult>AssumedRoleUser>AssumedRoleId"`
		Arn         string   `xml:"AssumeRoleResult>AssumedRoleUser>Arn"`
		RequestID   string   `xml:"ResponseMetadata>RequestId"`
	}
	w.Header().Set("Content-Type", "text/xml")
	_ = xml.NewEncoder(w).Encode(result{Xmlns: "https://sts.amazonaws.com/doc/2011-06-15/",
		Credentials: creds{c.AccessKeyID, c.SecretAccessKey, c.SessionToken, time.Now().Add(s.Lifetime).UTC().Format(time.RFC3339)},
		RoleID:      "AROAFAKE:" + form.Get("RoleSessionName"), Arn: "arn:aws:sts::123456789012:assumed-role/switchyard/" + form.Get("RoleSessionName"), RequestID: "fake"})
}
