// The guide calls redisClient.initRedis() and redisClient.subscribeToChannel(channel, cb) with
// cb receiving the parsed message (broadcastSensorReading reads reading.deviceId) but does not
// show the module: node-redis v4, a client plus a duplicate in subscriber mode, REDIS_PASSWORD
// as in the deployment reference.
const { createClient } = require('redis');
const config = require('../config');
const logger = require('../utils/logger');

let client;
let subscriber;

async function initRedis() {
  client = createClient({
    socket: { host: config.redis.host, port: Number(config.redis.port) },
    password: process.env.REDIS_PASSWORD || undefined,
  });
  client.on('error', (error) => logger.error('Redis client error', { error: error.message }));
  await client.connect();
  subscriber = client.duplicate();
  subscriber.on('error', (error) => logger.error('Redis subscriber error', { error: error.message }));
  await subscriber.connect();
  logger.info(`Connected to Redis at ${config.redis.host}:${config.redis.port}`);
}

async function subscribeToChannel(channel, callback) {
  await subscriber.subscribe(channel, (message) => {
    try {
      callback(JSON.parse(message));
    } catch (error) {
      logger.error(`Invalid message on ${channel}`, { error: error.message });
    }
  });
  logger.info(`Subscribed to Redis channel: ${channel}`);
}

module.exports = { initRedis, subscribeToChannel };
