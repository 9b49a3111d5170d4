//! Mock apns service (written with the channel).
