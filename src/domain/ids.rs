//! Opaque identifiers. The core never looks inside them; the store decides
//! their format (UUIDs today), so they are plain strings here.

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        // Shared, not owned: ids are cloned into every delivery and cache,
        // and a clone should cost a counter increment, not an allocation.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            /// Wraps a raw id; any string is accepted because ids are opaque.
            pub fn new(raw: impl Into<String>) -> Self {
                Self(raw.into().into())
            }

            /// The id as it travels on the wire and in the store.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        // Hashes and compares as its text (the derives above go through
        // `Arc<str>` to `str`), so maps keyed by ids are searched by `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// Identifies a registered user.
    UserId
);
id_type!(
    /// Identifies a conversation (direct or room).
    ConversationId
);
id_type!(
    /// Identifies one stored message.
    MessageId
);
id_type!(
    /// Identifies one WebSocket session (a user may have several).
    SessionId
);
id_type!(
    /// Identifies one device session: a login on one device, which its
    /// refresh tokens keep alive and whose WebSocket connections close when
    /// it ends.
    DeviceId
);
id_type!(
    /// Identifies one uploaded file.
    FileId
);
id_type!(
    /// Identifies one resumable (tus) upload under way.
    UploadId
);
