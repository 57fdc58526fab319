package policy_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/switchyard-dev/switchyard/router/policy"
	"github.com/switchyard-dev/switchyard/router/policy/policytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every built-in policy passes the contract.
func TestBuiltinsPassTheContract(t *testing.T) {
	for _, name := range policy.Builtins().Names() {
		t.Run(name, func(t *testing.T) {
			policytest.Run(t, func() policy.Policy {
				p, err := policy.Builtins().Get(name)
				if err != nil {
					t.Fatal(err)
				}
				return p
			})
		})
	}
}

// broken ranks a pool twice and drops another.
type broken struct{}

func (broken) Name() string { return "broken" }
func (broken) Rank(_ *policy.Request, _ []policy.PoolView, eligible []policy.Candidate, _ *policy.Env) {
	if len(eligible) > 1 {
		eligible[1] = eligible[0]
	}
}

// Decide enforces the contract: a policy that breaks it gets the eligible
// pools in their given order, never a duplicate or a lost pool.
func TestDecideEnforcesThePermutation(t *testing.T) {
	pools := []policy.PoolView{
		{Name: "a", Region: "us-east-1", Geography: "us", Models: []string{"m"}, Limit: 4, Weight: 1},
		{Name: "b", Region: "us-east-1", Geography: "us", Models: []string{"m"}, Limit: 4, Weight: 1},
		{Name: "c", Region: "us-east-1", Geography: "us", Models: []string{"m"}, Limit: 4, Weight: 1, Drained: true},
	}
	d := policy.Decide(broken{}, &policy.Request{Model: "m"}, pools, &policy.Env{})
	if len(d.Ranked) != 2 || d.Ranked[0].Pool != "a" || d.Ranked[1].Pool != "b" {
		t.Fatalf("ranked %+v, want a, b", d.Ranked)
	}
}
