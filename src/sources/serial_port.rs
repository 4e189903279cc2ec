//! Opening a serial port with its line settings, for every source that owns one (Modbus RTU
//! lines, line-protocol sensors). tokio-serial is built without default features: no libudev.

use tokio_serial::{SerialPortBuilderExt, SerialStream};

use crate::config::{Parity, SerialPortConfig};

/// Opens a serial port with the line settings (exclusive: one owner per port).
pub fn open_port(settings: &SerialPortConfig) -> Result<SerialStream, tokio_serial::Error> {
    let parity = match settings.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let data_bits = if settings.data_bits == 7 {
        tokio_serial::DataBits::Seven
    } else {
        tokio_serial::DataBits::Eight
    };
    let stop_bits = if settings.stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    tokio_serial::new(&settings.path, settings.baud_rate)
        .data_bits(data_bits)
        .parity(parity)
        .stop_bits(stop_bits)
        .flow_control(tokio_serial::FlowControl::None)
        .open_native_async()
}
