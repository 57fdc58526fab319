package gateway

import (
	"net/http"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
)

// The Anthropic Messages API is served on the same listener as the OpenAI
// API, driven by anthropic-sdk-go.
func TestHTTPListenServesTheMessagesAPI(t *testing.T) {
	base, _ := startWithHTTP(t)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := anthropic.NewClient(option.WithBaseURL(base+"/"), option.WithAPIKey("unused"), option.WithMaxRetries(0),
		option.WithHTTPClient(&http.Client{Transport: tr, Timeout: 10 * time.Second}))
	msg, err := c.Messages.New(t.Context(), anthropic.MessageNewParams{Model: "llama-3.1-8b", MaxTokens: 4,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello"))}})
	if err != nil {
		t.Fatal(err)
	}
	if msg.StopReason != anthropic.StopReasonMaxTokens || msg.Usage.OutputTokens != 4 || msg.Content[0].Text == "" {
		t.Fatalf("message %s", msg.RawJSON())
	}
}
