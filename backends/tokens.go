package backends

// EstimateTokens approximates the token count of text the way the whole
// project does (router validation, simulator, load-test prompt synthesis):
// one token per four bytes, at least one for non-empty text. Real tokenizers
// average 3.5–4.5 bytes per token on English and code.
func EstimateTokens(text string) int {
	if len(text) == 0 {
		return 0
	}
	return (len(text) + 3) / 4
}

// BytesPerToken is the ratio EstimateTokens assumes.
const BytesPerToken = 4
