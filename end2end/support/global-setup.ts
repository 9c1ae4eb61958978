import { startRedis } from "./servers";

// One redis-server for the whole run, on a free loopback port; its URL reaches the tests
// through the environment. Returns the teardown that stops it.
export default async function globalSetup() {
  const redis = await startRedis();
  process.env.E2E_REDIS_URL = redis.url;
  return async () => redis.stop();
}
