package openai

import "github.com/switchyard-dev/switchyard/backends"

// newPool builds an `adapter: openai` pool (see Register).
func newPool(spec backends.Spec, o Options) (backends.Backend, error) {
	b, err := New(spec, o)
	if err != nil {
		return nil, err
	}
	return b, nil
}
