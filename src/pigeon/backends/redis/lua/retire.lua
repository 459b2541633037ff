-- retire: remove worker ARGV[2]'s record.

redis.call('HDEL', B .. 'workers', ARGV[2])
redis.call('ZREM', B .. 'wexp', ARGV[2])
return 1
