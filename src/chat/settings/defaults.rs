//! The settings comet knows, with Rocket.Chat's default values and types.
//!
//! Two kinds: the ones comet's own services read (limits, editing, registration), and the
//! public ones Rocket.Chat's clients read to decide what to show (the mobile app asks for
//! about ninety at start: `Accounts_ShowFormLogin` decides whether its login form shows at
//! all). A feature comet does not have keeps Rocket.Chat's default only where that default
//! says "off"; where Rocket.Chat's default would switch on a service comet lacks (LDAP,
//! CAS, federation, E2E, video conference), the value says it is off, so no client offers
//! what the server cannot do. It owns nothing else: reading and writing are in the parent.

/// One default: id, Rocket.Chat's type, the value as JSON text, readable by anyone.
pub(super) struct Default {
    pub id: &'static str,
    pub kind: &'static str,
    pub value: &'static str,
    pub public: bool,
}

const fn public(id: &'static str, kind: &'static str, value: &'static str) -> Default {
    Default {
        id,
        kind,
        value,
        public: true,
    }
}

const fn private(id: &'static str, kind: &'static str, value: &'static str) -> Default {
    Default {
        id,
        kind,
        value,
        public: false,
    }
}

/// The id of the workspace's identity, generated once at first start.
pub(super) const UNIQUE_ID: &str = "uniqueID";

#[rustfmt::skip]
pub(super) const DEFAULTS: &[Default] = &[
    // The workspace.
    public("Site_Name", "string", r#""comet""#),
    public("Site_Url", "string", r#""http://localhost:3000""#),
    public("Language", "language", r#""""#),
    public("CDN_PREFIX", "string", r#""""#),
    public("Assets_favicon_512", "asset", r#"{"defaultUrl":"images/logo/android-chrome-512x512.png"}"#),
    public("API_Use_REST_For_DDP_Calls", "boolean", "true"),
    public("API_Embed", "boolean", "true"),
    public("API_Gitlab_URL", "string", r#""""#),
    public("API_Default_Count", "int", "50"),
    public("API_Upper_Count_Limit", "int", "100"),
    public("Force_Screen_Lock", "boolean", "false"),
    public("Force_Screen_Lock_After", "int", "1800"),
    public("Allow_Save_Media_to_Gallery", "boolean", "true"),
    public("Number_of_users_autocomplete_suggestions", "int", "5"),
    public("Presence_broadcast_disabled", "boolean", "false"),
    // Off-the-record chats: whether clients may relay their key exchange (`stream-notify-user`).
    public("OTR_Enable", "boolean", "true"),
    public("Cloud_Workspace_AirGapped_Restrictions_Remaining_Days", "int", "-1"),
    public("UI_Use_Real_Name", "boolean", "false"),
    public("UI_Allow_room_names_with_special_chars", "boolean", "false"),
    public("UI_DisplayRoles", "boolean", "true"),
    public("UI_Group_Channels_By_Type", "boolean", "true"),
    public("UTF8_User_Names_Validation", "string", r#""[0-9a-zA-Z-_.]+""#),
    public("UTF8_Channel_Names_Validation", "string", r#""[0-9a-zA-Z-_.]+""#),
    public("Favorite_Rooms", "boolean", "true"),
    public("Discussion_enabled", "boolean", "true"),
    public("Threads_enabled", "boolean", "true"),
    public("Accounts_Directory_DefaultView", "select", r#""channels""#),
    public("DirectMesssage_maxUsers", "int", "8"),
    // Signing in and registering.
    public("Accounts_ShowFormLogin", "boolean", "true"),
    public("Accounts_RegistrationForm", "select", r#""Public""#),
    public("Accounts_RegistrationForm_LinkReplacementText", "string", r#""New user registration is currently disabled""#),
    // Empty until an administrator sets one: `Secret URL` then lets no one register.
    private("Accounts_RegistrationForm_SecretURL", "string", r#""""#),
    public("Accounts_EmailOrUsernamePlaceholder", "string", r#""""#),
    public("Accounts_PasswordPlaceholder", "string", r#""""#),
    public("Accounts_ConfirmPasswordPlaceholder", "string", r#""""#),
    public("Accounts_NamePlaceholder", "string", r#""""#),
    public("Accounts_RequirePasswordConfirmation", "boolean", "true"),
    public("Accounts_PasswordReset", "boolean", "true"),
    public("Accounts_EmailVerification", "boolean", "false"),
    public("Accounts_ManuallyApproveNewUsers", "boolean", "false"),
    public("Accounts_LoginExpiration", "int", "90"),
    public("Accounts_AllowAnonymousRead", "boolean", "false"),
    public("Accounts_AllowAnonymousWrite", "boolean", "false"),
    public("Accounts_iframe_enabled", "boolean", "false"),
    public("Accounts_Iframe_api_url", "string", r#""""#),
    public("Accounts_Iframe_api_method", "string", r#""POST""#),
    public("Accounts_TwoFactorAuthentication_Enabled", "boolean", "false"),
    public("Accounts_CustomFields", "code", r#""""#),
    // What a user may change of their own account.
    public("Accounts_AllowEmailChange", "boolean", "true"),
    public("Accounts_AllowPasswordChange", "boolean", "true"),
    public("Accounts_AllowRealNameChange", "boolean", "true"),
    public("Accounts_AllowUserAvatarChange", "boolean", "true"),
    public("Accounts_AllowUserProfileChange", "boolean", "true"),
    public("Accounts_AllowUserStatusMessageChange", "boolean", "true"),
    public("Accounts_AllowUsernameChange", "boolean", "true"),
    public("Accounts_AllowInvisibleStatusOption", "boolean", "true"),
    public("Accounts_AllowDeleteOwnAccount", "boolean", "false"),
    public("Accounts_AvatarBlockUnauthenticatedAccess", "boolean", "false"),
    public("Accounts_AvatarExternalProviderUrl", "string", r#""""#),
    public("Accounts_RoomAvatarExternalProviderUrl", "string", r#""""#),
    public("Accounts_Password_Policy_Enabled", "boolean", "false"),
    public("Accounts_Password_Policy_MinLength", "int", "7"),
    public("Accounts_Password_Policy_MaxLength", "int", "-1"),
    public("Accounts_Password_Policy_ForbidRepeatingCharacters", "boolean", "true"),
    public("Accounts_Password_Policy_ForbidRepeatingCharactersCount", "int", "3"),
    public("Accounts_Password_Policy_AtLeastOneLowercase", "boolean", "true"),
    public("Accounts_Password_Policy_AtLeastOneUppercase", "boolean", "true"),
    public("Accounts_Password_Policy_AtLeastOneNumber", "boolean", "true"),
    public("Accounts_Password_Policy_AtLeastOneSpecialCharacter", "boolean", "true"),
    // Services comet does not run: off, so no client offers them.
    public("LDAP_Enable", "boolean", "false"),
    public("CROWD_Enable", "boolean", "false"),
    public("CAS_enabled", "boolean", "false"),
    public("CAS_login_url", "string", r#""""#),
    public("FEDERATION_Enabled", "boolean", "false"),
    public("Federation_Service_Enabled", "boolean", "false"),
    public("Federation_Matrix_enabled", "boolean", "false"),
    public("E2E_Enable", "boolean", "false"),
    public("E2E_Enabled_Default_PrivateRooms", "boolean", "false"),
    public("E2E_Enable_Encrypt_Files", "boolean", "true"),
    public("E2E_Enabled_Mentions", "boolean", "false"),
    public("AutoTranslate_Enabled", "boolean", "false"),
    public("Livechat_enabled", "boolean", "false"),
    public("Livechat_request_comment_when_closing_conversation", "boolean", "true"),
    public("Livechat_allow_manual_on_hold", "boolean", "false"),
    public("Canned_Responses_Enable", "boolean", "false"),
    public("Omnichannel_call_provider", "select", r#""default-provider""#),
    public("VideoConf_Enable_DMs", "boolean", "false"),
    public("VideoConf_Enable_Channels", "boolean", "false"),
    public("VideoConf_Enable_Groups", "boolean", "false"),
    public("VideoConf_Enable_Teams", "boolean", "false"),
    public("Jitsi_Enabled", "boolean", "false"),
    public("Jitsi_Enable_Channels", "boolean", "false"),
    public("Jitsi_Enable_Teams", "boolean", "false"),
    public("Jitsi_SSL", "boolean", "true"),
    public("Jitsi_Domain", "string", r#""meet.jit.si""#),
    public("Jitsi_Enabled_TokenAuth", "boolean", "false"),
    public("Jitsi_URL_Room_Hash", "boolean", "true"),
    public("Jitsi_URL_Room_Prefix", "string", r#""RocketChat""#),
    public("VoIP_TeamCollab_Ice_Servers", "string", r#""stun:stun.l.google.com:19302""#),
    public("VoIP_TeamCollab_Ice_Gathering_Timeout", "int", "5000"),
    public("VoIP_TeamCollab_SIP_Integration_For_Internal_Calls", "boolean", "false"),
    // Files.
    public("FileUpload_Enabled", "boolean", "true"),
    public("FileUpload_MaxFileSize", "int", "104857600"),
    public("FileUpload_MediaTypeWhiteList", "string", r#""""#),
    public("FileUpload_MediaTypeBlackList", "string", r#""image/svg+xml""#),
    public("FileUpload_ProtectFiles", "boolean", "true"),
    // Where files are kept: GridFS falls back to FileSystem without MongoDB.
    private("FileUpload_Storage_Type", "select", r#""GridFS""#),
    private("FileUpload_FileSystemPath", "string", r#""""#),
    private("FileUpload_S3_Bucket", "string", r#""""#),
    private("FileUpload_S3_Region", "string", r#""""#),
    private("FileUpload_S3_BucketURL", "string", r#""""#),
    private("FileUpload_S3_ForcePathStyle", "boolean", "false"),
    private("FileUpload_S3_AWSAccessKeyId", "string", r#""""#),
    private("FileUpload_S3_AWSSecretAccessKey", "password", r#""""#),
    private("FileUpload_S3_URLExpiryTimeSpan", "int", "120"),
    private("FileUpload_S3_Proxy_Uploads", "boolean", "false"),
    private("FileUpload_S3_Proxy_Avatars", "boolean", "false"),
    // Comet strips a photo's metadata by default (Rocket.Chat does not): it says where
    // the photo was taken.
    public("Message_Attachments_Strip_Exif", "boolean", "true"),
    public("Message_Attachments_Thumbnails_Enabled", "boolean", "true"),
    public("Message_Attachments_Thumbnails_Width", "int", "480"),
    public("Message_Attachments_Thumbnails_Height", "int", "360"),
    // Messages.
    public("Message_MaxAllowedSize", "int", "5000"),
    public("Message_AllowEditing", "boolean", "true"),
    public("Message_AllowEditing_BlockEditInMinutes", "int", "0"),
    public("Message_AllowDeleting", "boolean", "true"),
    public("Message_AllowDeleting_BlockDeleteInMinutes", "int", "0"),
    public("Message_ShowEditedStatus", "boolean", "true"),
    public("Message_ShowDeletedStatus", "boolean", "false"),
    public("Message_KeepHistory", "boolean", "false"),
    public("Message_AllowPinning", "boolean", "true"),
    public("Message_AllowStarring", "boolean", "true"),
    public("Message_AudioRecorderEnabled", "boolean", "true"),
    public("Message_VideoRecorderEnabled", "boolean", "true"),
    public("Message_GroupingPeriod", "int", "300"),
    public("Message_TimeFormat", "string", r#""LT""#),
    public("Message_TimeAndDateFormat", "string", r#""LLL""#),
    public("Message_Read_Receipt_Enabled", "boolean", "false"),
    public("Message_Read_Receipt_Store_Users", "boolean", "false"),
    public("Unread_Count", "select", r#""user_and_group_mentions_only""#),
    public("Unread_Count_DM", "select", r#""all_messages""#),
    public("Store_Last_Message", "boolean", "true"),
    public("Hide_System_Messages", "multiSelect", "[]"),
    // REST and DDP limits.
    private("API_Enable_Rate_Limiter", "boolean", "true"),
    private("API_Enable_Rate_Limiter_Limit_Calls_Default", "int", "10"),
    private("API_Enable_Rate_Limiter_Limit_Time_Default", "int", "60000"),
    private("Rate_Limiter_Limit_RegisterUser", "int", "1"),
    private("API_Enable_CORS", "boolean", "false"),
    private("API_CORS_Origin", "string", r#""*""#),
    private("DDP_Rate_Limit_IP_Enabled", "boolean", "true"),
    private("DDP_Rate_Limit_IP_Requests_Allowed", "int", "120000"),
    private("DDP_Rate_Limit_IP_Interval_Time", "int", "60000"),
    private("DDP_Rate_Limit_User_By_Method_Enabled", "boolean", "true"),
    private("DDP_Rate_Limit_User_By_Method_Requests_Allowed", "int", "20"),
    private("DDP_Rate_Limit_User_By_Method_Interval_Time", "int", "10000"),
    private("DDP_Rate_Limit_Connection_By_Method_Enabled", "boolean", "true"),
    private("DDP_Rate_Limit_Connection_By_Method_Requests_Allowed", "int", "10"),
    private("DDP_Rate_Limit_Connection_By_Method_Interval_Time", "int", "10000"),
    private("DDP_Rate_Limit_User_Enabled", "boolean", "true"),
    private("DDP_Rate_Limit_User_Requests_Allowed", "int", "1200"),
    private("DDP_Rate_Limit_User_Interval_Time", "int", "60000"),
    private("DDP_Rate_Limit_Connection_Enabled", "boolean", "true"),
    private("DDP_Rate_Limit_Connection_Requests_Allowed", "int", "600"),
    private("DDP_Rate_Limit_Connection_Interval_Time", "int", "60000"),
    // Meteor's default rule on `login` and `createUser` per connection.
    private("DDP_Rate_Limit_Login_Enabled", "boolean", "true"),
    private("DDP_Rate_Limit_Login_Requests_Allowed", "int", "5"),
    private("DDP_Rate_Limit_Login_Interval_Time", "int", "10000"),
    private("Block_Multiple_Failed_Logins_Enabled", "boolean", "true"),
    private("Block_Multiple_Failed_Logins_By_User", "boolean", "true"),
    private("Block_Multiple_Failed_Logins_Attempts_Until_Block_By_User", "int", "10"),
    private("Block_Multiple_Failed_Logins_Time_To_Unblock_By_User_In_Minutes", "int", "5"),
    private("Block_Multiple_Failed_Logins_By_Ip", "boolean", "true"),
    private("Block_Multiple_Failed_Logins_Attempts_Until_Block_By_Ip", "int", "50"),
    private("Block_Multiple_Failed_Logins_Time_To_Unblock_By_Ip_In_Minutes", "int", "5"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_is_json_of_its_type_and_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for d in DEFAULTS {
            assert!(seen.insert(d.id), "{} is listed twice", d.id);
            let value: serde_json::Value =
                serde_json::from_str(d.value).unwrap_or_else(|e| panic!("{}: {e}", d.id));
            let fits = match d.kind {
                "boolean" => value.is_boolean(),
                "int" => value.is_i64(),
                "string" | "select" | "code" | "language" | "password" => value.is_string(),
                "multiSelect" => value.is_array(),
                "asset" => value.is_object(),
                other => panic!("{}: unknown type {other}", d.id),
            };
            assert!(fits, "{}: {} is not a {}", d.id, d.value, d.kind);
        }
        assert!(
            !seen.contains(UNIQUE_ID),
            "uniqueID is generated, not a default"
        );
    }

    #[test]
    fn the_settings_the_mobile_apps_login_view_reads_are_public() {
        for id in [
            "Accounts_ShowFormLogin",
            "Accounts_RegistrationForm",
            "Accounts_EmailOrUsernamePlaceholder",
            "Accounts_PasswordPlaceholder",
            "Accounts_PasswordReset",
            "Site_Url",
            "Site_Name",
        ] {
            let found = DEFAULTS.iter().find(|d| d.id == id);
            assert!(
                found.is_some_and(|d| d.public),
                "{id} is not a public default"
            );
        }
    }
}
