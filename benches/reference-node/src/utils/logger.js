// The guide requires '../utils/logger' without showing it: winston (the usual choice for such a
// service) at LOG_LEVEL (the deployment reference sets `info`), JSON lines on stdout.
const winston = require('winston');

module.exports = winston.createLogger({
  level: process.env.LOG_LEVEL || 'info',
  format: winston.format.combine(winston.format.timestamp(), winston.format.json()),
  defaultMeta: { service: process.env.SERVICE_NAME || 'websocket-service' },
  transports: [new winston.transports.Console()],
});
