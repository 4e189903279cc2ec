// The reference websocket-service entry point. The two functions between the markers are the
// guide's "Redis Integration" code verbatim (websocket-integration-guide.md); the guide does not
// show this file's head (requires, HTTP server, PORT), so it is written here as little as runs it.
const http = require('http');
const config = require('./config');
const logger = require('./utils/logger');
const redisClient = require('./redis/client');
const socketIO = require('./socket/io');

const PORT = config.service.port;

// The deployment reference's container health check is `curl -f http://localhost:3003/health`.
const server = http.createServer((req, res) => {
  if (req.url === '/health') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ status: 'healthy', service: config.service.name }));
  }
});
socketIO.initSocketIO(server);

// ---- guide code (verbatim) begins ----
// Handle messages from Redis/Kafka
function handleMessage(topic, message) {
  logger.debug(`Handling message from topic: ${topic}`, { message });
  
  try {
    switch (topic) {
      case config.kafka.topics.sensorReadings:
        socketIO.broadcastSensorReading(message);
        break;
      case config.kafka.topics.deviceStatus:
        socketIO.broadcastDeviceStatus(message);
        break;
      case config.kafka.topics.alerts:
        socketIO.broadcastAlert(message);
        break;
      default:
        logger.warn(`Unknown topic: ${topic}`, { message });
    }
  } catch (error) {
    logger.error('Error handling message', { error, topic, message });
  }
}

// Initialize Redis subscribers
async function initializeService() {
  try {
    // Initialize Redis
    await redisClient.initRedis();
    
    // Subscribe to Redis channels
    await redisClient.subscribeToChannel(
      config.redis.channels.sensorReadings,
      (message) => handleMessage(config.kafka.topics.sensorReadings, message)
    );
    
    await redisClient.subscribeToChannel(
      config.redis.channels.deviceStatus,
      (message) => handleMessage(config.kafka.topics.deviceStatus, message)
    );
    
    await redisClient.subscribeToChannel(
      config.redis.channels.alerts,
      (message) => handleMessage(config.kafka.topics.alerts, message)
    );
    
    // Start HTTP server
    server.listen(PORT, () => {
      logger.info(`WebSocket service listening on port ${PORT}`);
    });
  } catch (error) {
    logger.error('Failed to initialize service', { error });
    process.exit(1);
  }
}
// ---- guide code (verbatim) ends ----

initializeService();
