//! Mock fcm service (written with the channel).
