//! The use cases as one trait, the core's inbound port: what the inbound
//! adapters call, so that they can be tested against a mock
//! (`MockUseCases`) without a store. [`ChatService`] implements it; each
//! method is documented where it is implemented, in the capability's file.

use async_trait::async_trait;

use super::{Answer, Authenticated, Caller, ChatService, Draft, SignedIn};
use crate::domain::conversation::{ConversationSummary, RoomName, RoomsPage, Visibility};
use crate::domain::device::{Device, DeviceInfo};
use crate::domain::error::{
    AccountError, AuthenticateError, BlockError, ChangeMessageError, ConversationError,
    EndDeviceError, FileError, InviteError, LoginError, PortError, PresenceError, RefreshError,
    RegisterError, SendError,
};
use crate::domain::file::{FileInfo, Upload};
use crate::domain::ids::{ConversationId, DeviceId, FileId, MessageId, UploadId, UserId};
use crate::domain::message::{HistoryPage, HistoryQuery, Message, MessageBody};
use crate::domain::page::PageLimit;
use crate::domain::ports::OpenSessionError;
use crate::domain::presence::{ActiveStatus, Presence};
use crate::domain::time::Timestamp;
use crate::domain::user::{Password, User, Username};

/// Every use case of the contract.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait UseCases: Send + Sync {
    /// [`ChatService::healthy`].
    async fn healthy(&self) -> bool;
    /// [`ChatService::now`].
    fn now(&self) -> Timestamp;
    /// [`ChatService::register`].
    async fn register(
        &self,
        username: Username,
        password: Password,
        device: DeviceInfo,
    ) -> Result<SignedIn, RegisterError>;
    /// [`ChatService::login`].
    async fn login(
        &self,
        username: &str,
        password: &str,
        device: DeviceInfo,
    ) -> Result<SignedIn, LoginError>;
    /// [`ChatService::refresh`].
    async fn refresh(&self, token: &str, address: Option<String>)
    -> Result<SignedIn, RefreshError>;
    /// [`ChatService::reauthenticate`].
    async fn reauthenticate(
        &self,
        user: &UserId,
        device: &DeviceId,
        token: &str,
    ) -> Result<Timestamp, AuthenticateError>;
    /// [`ChatService::devices`].
    async fn devices(&self, user: &UserId) -> Result<Vec<Device>, PortError>;
    /// [`ChatService::end_device`].
    async fn end_device(&self, user: &UserId, device: &DeviceId) -> Result<(), EndDeviceError>;
    /// [`ChatService::end_all_devices`].
    async fn end_all_devices(&self, user: &UserId) -> Result<(), PortError>;
    /// [`ChatService::change_password`].
    async fn change_password(
        &self,
        auth: &Authenticated,
        current: &str,
        new: Password,
    ) -> Result<(), AccountError>;
    /// [`ChatService::delete_account`].
    async fn delete_account(&self, user: &User, password: &str) -> Result<(), AccountError>;
    /// [`ChatService::admit_upload`].
    async fn admit_upload(&self, user: &UserId, size: u64) -> Result<(), FileError>;
    /// [`ChatService::store_file`].
    async fn store_file(&self, file: FileInfo) -> Result<FileInfo, FileError>;
    /// [`ChatService::store_uploaded_file`].
    async fn store_uploaded_file(
        &self,
        file: FileInfo,
        upload: &UploadId,
    ) -> Result<FileInfo, FileError>;
    /// [`ChatService::readable_file`].
    async fn readable_file(&self, user: &UserId, id: &FileId) -> Result<FileInfo, FileError>;
    /// [`ChatService::start_upload`].
    async fn start_upload(&self, upload: Upload) -> Result<Upload, FileError>;
    /// [`ChatService::upload_of`].
    async fn upload_of(&self, user: &UserId, id: &UploadId) -> Result<Upload, FileError>;
    /// [`ChatService::advance_upload`].
    async fn advance_upload(&self, upload: &Upload, to: u64) -> Result<bool, FileError>;
    /// [`ChatService::forget_upload`].
    async fn forget_upload(&self, id: &UploadId) -> Result<bool, FileError>;
    /// [`ChatService::authenticate`].
    async fn authenticate<'a>(
        &self,
        token: Option<&'a str>,
    ) -> Result<Authenticated, AuthenticateError>;
    /// [`ChatService::find_users`].
    async fn find_users(
        &self,
        viewer: &UserId,
        prefix: &str,
        limit: PageLimit,
    ) -> Result<Vec<(User, bool)>, PortError>;
    /// [`ChatService::open_session`].
    async fn open_session(&self, caller: &Caller) -> Result<(), OpenSessionError>;
    /// [`ChatService::close_session`].
    async fn close_session(&self, caller: &Caller) -> Result<(), PortError>;
    /// [`ChatService::touch`].
    async fn touch(&self, caller: &Caller) -> Result<(), PortError>;
    /// [`ChatService::connected_users`].
    async fn connected_users(
        &self,
        caller: &Caller,
        limit: PageLimit,
    ) -> Result<Vec<User>, PortError>;
    /// [`ChatService::presence_of`].
    async fn presence_of(
        &self,
        caller: &Caller,
        ids: Vec<UserId>,
    ) -> Result<Vec<Presence>, PresenceError>;
    /// [`ChatService::set_status`].
    async fn set_status(
        &self,
        caller: &Caller,
        status: ActiveStatus,
    ) -> Result<Presence, PortError>;
    /// [`ChatService::send_all`].
    async fn send_all(&self, caller: &Caller, sends: Vec<Draft>)
    -> Vec<Result<Message, SendError>>;
    /// [`ChatService::history`].
    async fn history(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, ConversationError>;
    /// [`ChatService::conversations`].
    async fn conversations(&self, caller: &Caller) -> Result<Vec<ConversationSummary>, PortError>;
    /// [`ChatService::mark_read`].
    async fn mark_read(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        seq: u64,
    ) -> Result<u64, ConversationError>;
    /// [`ChatService::send`].
    async fn send(&self, caller: &Caller, draft: Draft) -> Result<Message, SendError>;
    /// [`ChatService::typing`].
    async fn typing(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        active: bool,
    ) -> Result<(), ConversationError>;
    /// [`ChatService::edit_message`].
    async fn edit_message(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        message: &MessageId,
        body: MessageBody,
    ) -> Result<Message, ChangeMessageError>;
    /// [`ChatService::delete_message`].
    async fn delete_message(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        message: &MessageId,
    ) -> Result<Message, ChangeMessageError>;
    /// [`ChatService::create_room`].
    async fn create_room(
        &self,
        caller: &Caller,
        name: RoomName,
        visibility: Visibility,
    ) -> Result<ConversationSummary, PortError>;
    /// [`ChatService::join_room`].
    async fn join_room(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
    ) -> Result<Answer<ConversationSummary>, ConversationError>;
    /// [`ChatService::invite_to_room`].
    async fn invite_to_room(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
        invitee: &UserId,
    ) -> Result<Answer<ConversationSummary>, InviteError>;
    /// [`ChatService::leave_room`].
    async fn leave_room(
        &self,
        caller: &Caller,
        conversation: &ConversationId,
    ) -> Result<Answer<()>, ConversationError>;
    /// [`ChatService::list_rooms`].
    async fn list_rooms<'a>(
        &self,
        caller: &Caller,
        prefix: &str,
        after: Option<&'a ConversationId>,
        limit: PageLimit,
    ) -> Result<RoomsPage, PortError>;
    /// [`ChatService::block_user`].
    async fn block_user(&self, caller: &Caller, target: &UserId) -> Result<(), BlockError>;
    /// [`ChatService::unblock_user`].
    async fn unblock_user(&self, caller: &Caller, target: &UserId) -> Result<(), BlockError>;
    /// [`ChatService::blocked_users`].
    async fn blocked_users(&self, caller: &Caller) -> Result<Vec<User>, PortError>;
}

/// Each method calls the inherent one of the same name (which method
/// resolution prefers), where the use case is written.
#[async_trait]
impl UseCases for ChatService {
    async fn healthy(&self) -> bool {
        ChatService::healthy(self).await
    }
    fn now(&self) -> Timestamp {
        ChatService::now(self)
    }
    async fn register(
        &self,
        u: Username,
        p: Password,
        d: DeviceInfo,
    ) -> Result<SignedIn, RegisterError> {
        ChatService::register(self, u, p, d).await
    }
    async fn login(&self, u: &str, p: &str, d: DeviceInfo) -> Result<SignedIn, LoginError> {
        ChatService::login(self, u, p, d).await
    }
    async fn refresh(&self, t: &str, a: Option<String>) -> Result<SignedIn, RefreshError> {
        ChatService::refresh(self, t, a).await
    }
    async fn reauthenticate(
        &self,
        u: &UserId,
        d: &DeviceId,
        t: &str,
    ) -> Result<Timestamp, AuthenticateError> {
        ChatService::reauthenticate(self, u, d, t).await
    }
    async fn devices(&self, u: &UserId) -> Result<Vec<Device>, PortError> {
        ChatService::devices(self, u).await
    }
    async fn end_device(&self, u: &UserId, d: &DeviceId) -> Result<(), EndDeviceError> {
        ChatService::end_device(self, u, d).await
    }
    async fn end_all_devices(&self, u: &UserId) -> Result<(), PortError> {
        ChatService::end_all_devices(self, u).await
    }
    async fn change_password(
        &self,
        a: &Authenticated,
        c: &str,
        n: Password,
    ) -> Result<(), AccountError> {
        ChatService::change_password(self, a, c, n).await
    }
    async fn delete_account(&self, u: &User, p: &str) -> Result<(), AccountError> {
        ChatService::delete_account(self, u, p).await
    }
    async fn admit_upload(&self, u: &UserId, n: u64) -> Result<(), FileError> {
        ChatService::admit_upload(self, u, n).await
    }
    async fn store_file(&self, f: FileInfo) -> Result<FileInfo, FileError> {
        ChatService::store_file(self, f).await
    }
    async fn store_uploaded_file(&self, f: FileInfo, up: &UploadId) -> Result<FileInfo, FileError> {
        ChatService::store_uploaded_file(self, f, up).await
    }
    async fn readable_file(&self, u: &UserId, id: &FileId) -> Result<FileInfo, FileError> {
        ChatService::readable_file(self, u, id).await
    }
    async fn start_upload(&self, up: Upload) -> Result<Upload, FileError> {
        ChatService::start_upload(self, up).await
    }
    async fn upload_of(&self, u: &UserId, id: &UploadId) -> Result<Upload, FileError> {
        ChatService::upload_of(self, u, id).await
    }
    async fn advance_upload(&self, up: &Upload, to: u64) -> Result<bool, FileError> {
        ChatService::advance_upload(self, up, to).await
    }
    async fn forget_upload(&self, id: &UploadId) -> Result<bool, FileError> {
        ChatService::forget_upload(self, id).await
    }
    async fn authenticate<'a>(
        &self,
        t: Option<&'a str>,
    ) -> Result<Authenticated, AuthenticateError> {
        ChatService::authenticate(self, t).await
    }
    async fn find_users(
        &self,
        v: &UserId,
        p: &str,
        l: PageLimit,
    ) -> Result<Vec<(User, bool)>, PortError> {
        ChatService::find_users(self, v, p, l).await
    }
    async fn open_session(&self, c: &Caller) -> Result<(), OpenSessionError> {
        ChatService::open_session(self, c).await
    }
    async fn close_session(&self, c: &Caller) -> Result<(), PortError> {
        ChatService::close_session(self, c).await
    }
    async fn touch(&self, c: &Caller) -> Result<(), PortError> {
        ChatService::touch(self, c).await
    }
    async fn connected_users(&self, c: &Caller, l: PageLimit) -> Result<Vec<User>, PortError> {
        ChatService::connected_users(self, c, l).await
    }
    async fn presence_of(
        &self,
        c: &Caller,
        i: Vec<UserId>,
    ) -> Result<Vec<Presence>, PresenceError> {
        ChatService::presence_of(self, c, i).await
    }
    async fn set_status(&self, c: &Caller, s: ActiveStatus) -> Result<Presence, PortError> {
        ChatService::set_status(self, c, s).await
    }
    async fn send(&self, c: &Caller, d: Draft) -> Result<Message, SendError> {
        ChatService::send(self, c, d).await
    }
    async fn send_all(&self, c: &Caller, d: Vec<Draft>) -> Vec<Result<Message, SendError>> {
        ChatService::send_all(self, c, d).await
    }
    async fn history(
        &self,
        c: &Caller,
        id: &ConversationId,
        q: HistoryQuery,
    ) -> Result<HistoryPage, ConversationError> {
        ChatService::history(self, c, id, q).await
    }
    async fn conversations(&self, c: &Caller) -> Result<Vec<ConversationSummary>, PortError> {
        ChatService::conversations(self, c).await
    }
    async fn mark_read(
        &self,
        c: &Caller,
        id: &ConversationId,
        seq: u64,
    ) -> Result<u64, ConversationError> {
        ChatService::mark_read(self, c, id, seq).await
    }
    async fn typing(
        &self,
        c: &Caller,
        id: &ConversationId,
        a: bool,
    ) -> Result<(), ConversationError> {
        ChatService::typing(self, c, id, a).await
    }
    async fn edit_message(
        &self,
        c: &Caller,
        id: &ConversationId,
        m: &MessageId,
        b: MessageBody,
    ) -> Result<Message, ChangeMessageError> {
        ChatService::edit_message(self, c, id, m, b).await
    }
    async fn delete_message(
        &self,
        c: &Caller,
        id: &ConversationId,
        m: &MessageId,
    ) -> Result<Message, ChangeMessageError> {
        ChatService::delete_message(self, c, id, m).await
    }
    async fn create_room(
        &self,
        c: &Caller,
        n: RoomName,
        v: Visibility,
    ) -> Result<ConversationSummary, PortError> {
        ChatService::create_room(self, c, n, v).await
    }
    async fn join_room(
        &self,
        c: &Caller,
        id: &ConversationId,
    ) -> Result<Answer<ConversationSummary>, ConversationError> {
        ChatService::join_room(self, c, id).await
    }
    async fn invite_to_room(
        &self,
        c: &Caller,
        id: &ConversationId,
        u: &UserId,
    ) -> Result<Answer<ConversationSummary>, InviteError> {
        ChatService::invite_to_room(self, c, id, u).await
    }
    async fn leave_room(
        &self,
        c: &Caller,
        id: &ConversationId,
    ) -> Result<Answer<()>, ConversationError> {
        ChatService::leave_room(self, c, id).await
    }
    async fn list_rooms<'a>(
        &self,
        c: &Caller,
        p: &str,
        a: Option<&'a ConversationId>,
        l: PageLimit,
    ) -> Result<RoomsPage, PortError> {
        ChatService::list_rooms(self, c, p, a, l).await
    }
    async fn block_user(&self, c: &Caller, u: &UserId) -> Result<(), BlockError> {
        ChatService::block_user(self, c, u).await
    }
    async fn unblock_user(&self, c: &Caller, u: &UserId) -> Result<(), BlockError> {
        ChatService::unblock_user(self, c, u).await
    }
    async fn blocked_users(&self, c: &Caller) -> Result<Vec<User>, PortError> {
        ChatService::blocked_users(self, c).await
    }
}
