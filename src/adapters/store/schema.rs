//! diesel's view of the tables in `migrations/`.
//!
//! On SQLite, `messages` is a view over `message_rows`, which holds the
//! conversation and sender by the integer keys of `conversation_keys` and
//! `user_keys` (tables PostgreSQL does not have): every shared query reads
//! `messages`, and only SQLite's writer touches the other three.

diesel::table! {
    users (id) {
        id -> Text,
        username -> Text,
        username_key -> Text,
        password_hash -> Text,
        created_at -> BigInt,
        last_seen -> Nullable<BigInt>,
        generation -> BigInt,
        deleted_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    devices (id) {
        id -> Text,
        user_id -> Text,
        name -> Text,
        created_at -> BigInt,
        last_used_at -> BigInt,
        last_address -> Nullable<Text>,
        refresh_expires_at -> BigInt,
        ended_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    refresh_tokens (hash) {
        hash -> Text,
        device_id -> Text,
        rotated_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    conversations (id) {
        id -> Text,
        kind -> Text,
        name -> Nullable<Text>,
        name_key -> Nullable<Text>,
        visibility -> Nullable<Text>,
        direct_key -> Nullable<Text>,
        last_seq -> BigInt,
        member_count -> BigInt,
        created_by -> Text,
        created_at -> BigInt,
        last_activity -> BigInt,
    }
}

diesel::table! {
    members (conversation_id, user_id) {
        conversation_id -> Text,
        user_id -> Text,
        last_read_seq -> BigInt,
        joined_at -> BigInt,
    }
}

diesel::table! {
    messages (id) {
        id -> Text,
        conversation_id -> Text,
        seq -> BigInt,
        sender_id -> Text,
        body -> Text,
        client_msg_id -> Nullable<Text>,
        created_at -> BigInt,
        edited_at -> Nullable<BigInt>,
        deleted -> Bool,
        attachments -> Nullable<Text>,
    }
}

diesel::table! {
    files (id) {
        id -> Text,
        uploader -> Text,
        name -> Text,
        size -> BigInt,
        content_type -> Text,
        sha256 -> Text,
        width -> Nullable<Integer>,
        height -> Nullable<Integer>,
        thumbnail -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    message_files (message_id, file_id) {
        message_id -> Text,
        file_id -> Text,
        conversation_id -> Text,
    }
}

diesel::table! {
    uploads (id) {
        id -> Text,
        user_id -> Text,
        length -> BigInt,
        received -> BigInt,
        name -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        file_id -> Nullable<Text>,
    }
}

diesel::table! {
    blocks (blocker, blocked) {
        blocker -> Text,
        blocked -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    user_keys (key) {
        key -> BigInt,
        id -> Text,
    }
}

diesel::table! {
    conversation_keys (key) {
        key -> BigInt,
        id -> Text,
    }
}

diesel::joinable!(devices -> users (user_id));
diesel::joinable!(refresh_tokens -> devices (device_id));
diesel::joinable!(members -> conversations (conversation_id));
diesel::joinable!(members -> users (user_id));
diesel::joinable!(messages -> conversations (conversation_id));
diesel::joinable!(messages -> users (sender_id));
diesel::joinable!(files -> users (uploader));
diesel::joinable!(message_files -> files (file_id));
diesel::joinable!(message_files -> conversations (conversation_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    devices,
    refresh_tokens,
    conversations,
    members,
    messages,
    files,
    message_files,
    uploads,
    blocks,
    user_keys,
    conversation_keys
);
