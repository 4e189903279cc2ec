const { Server } = require('socket.io');
const config = require('../config');
const logger = require('../utils/logger');

let io;

function initSocketIO(httpServer) {
  // Create Socket.IO server
  io = new Server(httpServer, {
    cors: config.socketIO.cors,
    path: config.socketIO.path,
    serveClient: config.socketIO.serveClient,
    pingInterval: config.socketIO.pingInterval,
    pingTimeout: config.socketIO.pingTimeout,
    cookie: config.socketIO.cookie,
  });

  // Connection handler
  io.on('connection', (socket) => {
    const clientId = socket.id;
    logger.info(`Client connected: ${clientId}`);

    // Send welcome message
    socket.emit('welcome', {
      message: 'Connected to IoT Monitoring System',
      timestamp: new Date().toISOString(),
    });

    // Device subscription handlers
    socket.on('subscribe:device', (deviceId) => {
      logger.info(`Client ${clientId} subscribed to device: ${deviceId}`);
      socket.join(`device:${deviceId}`);
    });

    socket.on('unsubscribe:device', (deviceId) => {
      logger.info(`Client ${clientId} unsubscribed from device: ${deviceId}`);
      socket.leave(`device:${deviceId}`);
    });

    // All devices subscription
    socket.on('subscribe-all-devices', () => {
      logger.info(`Client ${clientId} subscribed to all devices`);
      socket.join('all-devices');
    });

    // System status subscription
    socket.on('subscribe-system', () => {
      logger.info(`Client ${clientId} subscribed to system status`);
      socket.join('system-status');
    });

    // Alert subscription
    socket.on('subscribe-alerts', () => {
      logger.info(`Client ${clientId} subscribed to alerts`);
      socket.join('alerts');
    });

    // Historical data request handler
    socket.on('get:history', async (params, callback) => {
      try {
        logger.info(`Client ${clientId} requested historical data`, params);
        // Implementation would fetch from database
        callback({
          success: true,
          message: 'Historical data retrieved',
          data: []
        });
      } catch (error) {
        logger.error('Error retrieving historical data', { error, params });
        callback({
          success: false,
          message: 'Failed to retrieve historical data',
          error: error.message,
        });
      }
    });

    // Heartbeat handler
    socket.on('ping', () => {
      socket.emit('pong');
    });

    // Disconnect handler
    socket.on('disconnect', (reason) => {
      logger.info(`Client disconnected: ${clientId}, reason: ${reason}`);
    });

    // Error handler
    socket.on('error', (error) => {
      logger.error(`Socket error for client ${clientId}`, { error });
    });
  });

  logger.info('Socket.IO server initialized');
  return io;
}

// Broadcasting functions
function broadcastSensorReading(reading) {
  if (!io) {
    logger.warn('Socket.IO not initialized, cannot broadcast');
    return;
  }

  try {
    if (reading && reading.deviceId) {
      // Broadcast to device subscribers
      io.to(`device:${reading.deviceId}`).emit('sensor:reading', reading);
      
      // Broadcast to all devices subscribers
      io.to('all-devices').emit('sensor:all', reading);
      
      logger.debug(`Broadcast sensor reading for device: ${reading.deviceId}`);
    }
  } catch (error) {
    logger.error('Error broadcasting sensor reading', { error, reading });
  }
}

function broadcastDeviceStatus(status) {
  if (!io) {
    logger.warn('Socket.IO not initialized, cannot broadcast');
    return;
  }

  try {
    if (status && status.deviceId) {
      // Broadcast to device subscribers
      io.to(`device:${status.deviceId}`).emit('device:status', status);
      
      // Broadcast to all devices subscribers
      io.to('all-devices').emit('device:all', status);
      
      logger.debug(`Broadcast device status for device: ${status.deviceId}`);
    }
  } catch (error) {
    logger.error('Error broadcasting device status', { error, status });
  }
}

function broadcastAlert(alert) {
  if (!io) {
    logger.warn('Socket.IO not initialized, cannot broadcast');
    return;
  }

  try {
    // Broadcast to alert subscribers
    io.to('alerts').emit('alert', alert);
    
    // Also broadcast to device subscribers if device-specific
    if (alert.deviceId) {
      io.to(`device:${alert.deviceId}`).emit('alert:device', alert);
    }
    
    // System-wide alert broadcast
    io.emit('alert:system', alert);
    
    logger.info('Broadcast alert', { alertId: alert.id, deviceId: alert.deviceId });
  } catch (error) {
    logger.error('Error broadcasting alert', { error, alert });
  }
}

function broadcastSystemStatus(status) {
  if (!io) {
    logger.warn('Socket.IO not initialized, cannot broadcast');
    return;
  }

  try {
    io.to('system-status').emit('system:status', status);
    logger.debug('Broadcast system status update');
  } catch (error) {
    logger.error('Error broadcasting system status', { error, status });
  }
}

module.exports = {
  initSocketIO,
  broadcastSensorReading,
  broadcastDeviceStatus,
  broadcastAlert,
  broadcastSystemStatus,
};
