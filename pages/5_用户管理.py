"""用户管理 — accounts for administrators: who may sign in, in which role, linked to which
roster id or bureau; add, reset a password, disable or enable. Every change is audited; a new
password or a disabled account signs that user out everywhere."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from grids.access import ROLES_ZH, PermissionDenied
from grids.accounts import AuthError
from layers.audit import beijing
from layers.store import StoreError
from ui import cards, page, state

st.set_page_config(page_title="用户管理 · 南通市生态环境执法网格地图", page_icon="👥",
                   layout="wide")
svc, actor, _router = state.load("users.manage")
ss = st.session_state
st.markdown("#### 用户管理")
done = ss.pop("_um_done", None)
if done:
    st.success(done)

users = svc.users(actor)
table = pd.DataFrame([{
    "登录名": u.login, "姓名": u.name, "角色": ROLES_ZH.get(u.role, u.role),
    "花名册编号": u.worker_id, "执法机构": u.bureau_code,
    "状态": "已停用" if u.disabled else ("已锁定" if u.locked_until else "正常"),
    "创建时间": beijing(u.created_at), "更新时间": beijing(u.updated_at)} for u in users])
st.dataframe(table, hide_index=True, width="stretch")

add, change = st.columns(2, gap="large")
# A refused form keeps what was typed (to correct one field); an added user gives a new, empty
# form (its widgets keyed by a counter).
n = ss.get("_um_add_n", 0)
with add, st.form(f"um_add_{n}"):
    st.markdown("**新增用户**")
    login = st.text_input("登录名（字母、数字、点、下划线、连字符）", max_chars=32,
                          key=f"um_login_{n}")
    role = st.selectbox("角色", list(ROLES_ZH), format_func=ROLES_ZH.get, key=f"um_role_{n}")
    name = st.text_input("姓名", max_chars=50, key=f"um_name_{n}")
    worker = st.text_input("花名册编号（网格员、网格长必填）", max_chars=32, key=f"um_worker_{n}")
    bureau = st.text_input("执法机构编码（执法局人员必填）", max_chars=32, key=f"um_bureau_{n}")
    pw1 = st.text_input("初始密码（至少 10 位，含三类字符）", type="password", max_chars=128,
                        key=f"um_pw1_{n}")
    pw2 = st.text_input("再次输入密码", type="password", max_chars=128, key=f"um_pw2_{n}")
    if st.form_submit_button("新增", type="primary"):
        if pw1 != pw2:
            st.error("两次输入的密码不一致")
        else:
            try:
                made = svc.add_user(actor, login.strip(), role, pw1, name=name,
                                    worker_id=worker.strip(), bureau_code=bureau.strip())
            except (AuthError, PermissionDenied, StoreError) as exc:
                st.error(cards.md(exc))
            else:
                ss["_um_done"] = f"已新增用户 {made.login}（{ROLES_ZH[made.role]}）"
                for old in [k for k in ss if str(k).startswith("um_") and str(k).endswith(f"_{n}")]:
                    del ss[old]  # the typed passwords are not kept in the session
                ss["_um_add_n"] = n + 1
                st.rerun()

with change:
    st.markdown("**修改密码、停用或启用**")
    logins = [u.login for u in users]
    if logins:
        who = st.selectbox("用户", logins, key="um_who")
        with st.form("um_pw", clear_on_submit=True):
            npw1 = st.text_input("新密码", type="password", max_chars=128)
            npw2 = st.text_input("再次输入新密码", type="password", max_chars=128)
            if st.form_submit_button("修改密码（该用户的所有会话将退出）"):
                try:
                    if npw1 != npw2:
                        raise AuthError("两次输入的密码不一致")
                    svc.set_password(actor, who, npw1)
                except (AuthError, PermissionDenied, StoreError) as exc:
                    st.error(cards.md(exc))
                else:
                    ss["_um_done"] = f"已修改 {who} 的密码"
                    st.rerun()
        current = next(u for u in users if u.login == who)
        label = "启用该用户" if current.disabled else "停用该用户（立即退出其所有会话）"
        if who == actor.login and not current.disabled:
            st.caption("不能停用自己的账号。")
        elif st.button(label, key="um_toggle"):
            try:
                svc.set_disabled(actor, who, not current.disabled)
            except (PermissionDenied, StoreError) as exc:
                st.error(cards.md(exc))
            else:
                ss["_um_done"] = f"已{'启用' if current.disabled else '停用'}用户 {who}"
                st.rerun()

page.sidebar(None, actor)
