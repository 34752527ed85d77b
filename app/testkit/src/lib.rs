//! Support for the app's tests and benchmarks, kept out of the app library: throw-away
//! `redis-server` ([`LocalRedis`]) and `rabbitmq-server` ([`LocalRabbit`]) processes on free
//! loopback ports in temporary directories, stopped and removed when their guard drops;
//! highly available Redis made of real servers ([`redis_ha`]: a Redis Cluster, a Sentinel
//! set); and the process helpers they share ([`process`]).
//! A missing server binary is an error naming the apt package to install.

pub mod local_rabbit;
pub mod local_redis;
pub mod process;
pub mod redis_ha;

pub use local_rabbit::{LocalRabbit, LocalRabbitError};
pub use local_redis::{LocalRedis, LocalRedisError};
pub use redis_ha::{RedisCluster, RedisSentinel};
