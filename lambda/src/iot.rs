//! Publishing through AWS IoT Core's data plane (HTTPS `Publish`, QoS 1).

use aws_sdk_iotdataplane::error::DisplayErrorContext;
use aws_sdk_iotdataplane::primitives::Blob;
use aws_sdk_iotdataplane::Client;

use crate::ports::{PublishError, Publisher};

#[derive(Debug, Clone)]
pub struct IotPublisher {
    client: Client,
}

impl IotPublisher {
    pub fn new(client: Client) -> Self {
        IotPublisher { client }
    }
}

impl Publisher for IotPublisher {
    async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), PublishError> {
        self.client
            .publish()
            .topic(topic)
            .qos(1)
            .payload(Blob::new(payload))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| PublishError {
                topic: topic.to_string(),
                why: DisplayErrorContext(&e).to_string(),
            })
    }
}
