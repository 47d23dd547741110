//! The MFRC522's register map: addresses, command codes, the bits the simulator acts on, and
//! the power-on value of every register (MFRC522 datasheet rev. 3.9, section 9).

/// Register addresses (datasheet section 9.2).
pub(super) mod reg {
    pub const COMMAND: u8 = 0x01;
    pub const COM_IEN: u8 = 0x02;
    pub const DIV_IEN: u8 = 0x03;
    pub const COM_IRQ: u8 = 0x04;
    pub const DIV_IRQ: u8 = 0x05;
    pub const ERROR: u8 = 0x06;
    pub const STATUS1: u8 = 0x07;
    pub const STATUS2: u8 = 0x08;
    pub const FIFO_DATA: u8 = 0x09;
    pub const FIFO_LEVEL: u8 = 0x0A;
    pub const WATER_LEVEL: u8 = 0x0B;
    pub const CONTROL: u8 = 0x0C;
    pub const BIT_FRAMING: u8 = 0x0D;
    pub const COLL: u8 = 0x0E;
    pub const MODE: u8 = 0x11;
    pub const TX_MODE: u8 = 0x12;
    pub const TX_CONTROL: u8 = 0x14;
    pub const TX_SEL: u8 = 0x16;
    pub const RX_SEL: u8 = 0x17;
    pub const RX_THRESHOLD: u8 = 0x18;
    pub const DEMOD: u8 = 0x19;
    pub const MF_TX: u8 = 0x1C;
    pub const SERIAL_SPEED: u8 = 0x1F;
    pub const CRC_RESULT_HIGH: u8 = 0x21;
    pub const CRC_RESULT_LOW: u8 = 0x22;
    pub const MOD_WIDTH: u8 = 0x24;
    pub const RF_CFG: u8 = 0x26;
    pub const GS_N: u8 = 0x27;
    pub const CW_GS_P: u8 = 0x28;
    pub const MOD_GS_P: u8 = 0x29;
    pub const T_MODE: u8 = 0x2A;
    pub const T_COUNTER_HIGH: u8 = 0x2E;
    pub const T_COUNTER_LOW: u8 = 0x2F;
    pub const TEST_PIN_EN: u8 = 0x33;
    pub const TEST_BUS: u8 = 0x35;
    pub const AUTO_TEST: u8 = 0x36;
    pub const VERSION: u8 = 0x37;
    pub const TEST_ADC: u8 = 0x3B;
}

/// Commands (datasheet table 149).
pub(super) mod cmd {
    pub const IDLE: u8 = 0x0;
    pub const MEM: u8 = 0x1;
    pub const GENERATE_RANDOM_ID: u8 = 0x2;
    pub const CALC_CRC: u8 = 0x3;
    pub const TRANSMIT: u8 = 0x4;
    pub const NO_CMD_CHANGE: u8 = 0x7;
    pub const RECEIVE: u8 = 0x8;
    pub const TRANSCEIVE: u8 = 0xC;
    pub const MF_AUTHENT: u8 = 0xE;
    pub const SOFT_RESET: u8 = 0xF;
}

// CommandReg
pub(super) const RCV_OFF: u8 = 0x20;
pub(super) const POWER_DOWN: u8 = 0x10;
pub(super) const COMMAND_BITS: u8 = 0x0F;
// ComIrqReg / DivIrqReg
pub(super) const SET: u8 = 0x80;
pub(super) const TX_IRQ: u8 = 0x40;
pub(super) const RX_IRQ: u8 = 0x20;
pub(super) const IDLE_IRQ: u8 = 0x10;
pub(super) const HI_ALERT_IRQ: u8 = 0x08;
pub(super) const LO_ALERT_IRQ: u8 = 0x04;
pub(super) const ERR_IRQ: u8 = 0x02;
pub(super) const TIMER_IRQ: u8 = 0x01;
pub(super) const DIV_IRQ_BITS: u8 = 0x14;
pub(super) const CRC_IRQ: u8 = 0x04;
// ErrorReg
pub(super) const PROTOCOL_ERR: u8 = 0x01;
pub(super) const PARITY_ERR: u8 = 0x02;
pub(super) const CRC_ERR: u8 = 0x04;
pub(super) const COLL_ERR: u8 = 0x08;
pub(super) const BUFFER_OVFL: u8 = 0x10;
/// Cleared when the receiver starts.
pub(super) const RX_ERRORS: u8 = PROTOCOL_ERR | PARITY_ERR | CRC_ERR | COLL_ERR;
// Status1Reg
pub(super) const CRC_OK: u8 = 0x40;
pub(super) const CRC_READY: u8 = 0x20;
pub(super) const IRQ: u8 = 0x10;
pub(super) const HI_ALERT: u8 = 0x02;
pub(super) const LO_ALERT: u8 = 0x01;
// Status2Reg: TempSensClear and I2CForceHS are plain bits, ModemState reads 0 (idle).
pub(super) const STATUS2_RW: u8 = 0xC0;
pub(super) const MF_CRYPTO1_ON: u8 = 0x08;
// ControlReg
pub(super) const T_START_NOW: u8 = 0x40;
pub(super) const RX_LAST_BITS: u8 = 0x07;
// BitFramingReg
pub(super) const START_SEND: u8 = 0x80;
// CollReg
pub(super) const VALUES_AFTER_COLL: u8 = 0x80;
pub(super) const COLL_POS_NOT_VALID: u8 = 0x20;
// TxModeReg
pub(super) const TX_CRC_EN: u8 = 0x80;
// TxControlReg: Tx1RFEn, Tx2RFEn.
pub(super) const ANTENNA: u8 = 0x03;
// TModeReg
pub(super) const T_AUTO: u8 = 0x80;

/// Power-on values (datasheet table 20 and the register descriptions). Bits the datasheet
/// marks undefined read 0; FIFOLevelReg and Status1Reg are computed.
pub(super) const POWER_ON: [u8; 64] = {
    let mut r = [0u8; 64];
    r[reg::COMMAND as usize] = RCV_OFF;
    r[reg::COM_IEN as usize] = 0x80;
    r[reg::COM_IRQ as usize] = IDLE_IRQ | LO_ALERT_IRQ;
    r[reg::WATER_LEVEL as usize] = 0x08;
    r[reg::CONTROL as usize] = 0x10;
    r[reg::COLL as usize] = VALUES_AFTER_COLL | COLL_POS_NOT_VALID;
    r[reg::MODE as usize] = 0x3F;
    r[reg::TX_CONTROL as usize] = 0x80;
    r[reg::TX_SEL as usize] = 0x10;
    r[reg::RX_SEL as usize] = 0x84;
    r[reg::RX_THRESHOLD as usize] = 0x84;
    r[reg::DEMOD as usize] = 0x4D;
    r[reg::MF_TX as usize] = 0x62;
    r[reg::SERIAL_SPEED as usize] = 0xEB;
    r[reg::CRC_RESULT_HIGH as usize] = 0xFF;
    r[reg::CRC_RESULT_LOW as usize] = 0xFF;
    r[reg::MOD_WIDTH as usize] = 0x26;
    r[reg::RF_CFG as usize] = 0x48;
    r[reg::GS_N as usize] = 0x88;
    r[reg::CW_GS_P as usize] = 0x20;
    r[reg::MOD_GS_P as usize] = 0x20;
    r[reg::TEST_PIN_EN as usize] = 0x80;
    r[reg::AUTO_TEST as usize] = 0x40;
    // MFRC522 version 2.0.
    r[reg::VERSION as usize] = 0x92;
    r
};
