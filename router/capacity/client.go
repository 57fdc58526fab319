package capacity

import "github.com/redis/go-redis/v9"

// NewRedisClient builds a go-redis client from the same URL forms the Redis
// store accepts (redis://, rediss://, redis+cluster://, seed lists), so other
// parts of the router (the control store) can share one Redis deployment.
func NewRedisClient(url string) (redis.UniversalClient, error) { return newUniversalClient(url) }
