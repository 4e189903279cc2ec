module.exports = {
  service: {
    // Service name for identification in logs and monitoring
    name: 'websocket-service',
    
    // Port for HTTP server hosting Socket.IO - separate from API Gateway
    port: process.env.PORT || 3003,
    
    // Environment setting affects logging levels and error handling
    environment: process.env.NODE_ENV || 'development'
  },
  
  socketIO: {
    // Path where Socket.IO server will be accessible - standard Socket.IO path
    path: '/socket.io',
    
    // Don't serve Socket.IO client files - frontend bundles its own client
    serveClient: false,
    
    // Interval between ping packets sent to clients - detects disconnections
    // 25 seconds allows for network delays while detecting dead connections
    pingInterval: 25000,
    
    // Time to wait for pong response before considering client disconnected
    // 20 seconds handles slow networks but prevents zombie connections
    pingTimeout: 20000,
    
    // Don't use cookies for session management - use stateless approach
    cookie: false,
    
    // Allowed transport methods - websocket preferred, polling as fallback
    // Polling works through firewalls that block websocket connections
    transports: ['websocket', 'polling'],
    
    // Allow Engine.IO v3 clients for backward compatibility
    allowEIO3: true,
    
    // CORS configuration for browser security
    cors: {
      // Allow frontend origin - React dev server typically runs on port 5173
      origin: process.env.FRONTEND_URL || "http://localhost:5173",
      
      // Allow GET for connection establishment, POST for polling transport
      methods: ["GET", "POST"],
      
      // Allow cookies and authentication headers to be sent
      credentials: true
    }
  },
  
  redis: {
    // Redis server for subscribing to real-time data updates
    host: process.env.REDIS_HOST || 'redis',
    port: process.env.REDIS_PORT || 6379,
    
    // Channel names that this service subscribes to for real-time updates
    channels: {
      // Channel for sensor reading updates from Data Ingestion service
      sensorReadings: 'sensor-readings',
      
      // Channel for device online/offline status changes
      deviceStatus: 'device-status',
      
      // Channel for alert notifications that need immediate broadcast
      alerts: 'alerts'
    }
  },
  
  kafka: {
    // Kafka topics for direct consumption (alternative to Redis pub/sub)
    topics: {
      // Main sensor data topic - same as producer uses
      sensorReadings: 'sensors-data',
      
      // Device status change events
      deviceStatus: 'device-status',
      
      // Alert generation events
      alerts: 'alerts'
    }
  }
};
