"""The listing route of the reference design (FastAPI + SQLModel + PostgreSQL), for
bench/reference.sh: GET /api/{user_id}/tasks?page=&page_size= over the service's own
`tasks` table, answered as {items, total, page, page_size}.

Written to be as fast as that stack allows, so that a ratio against it is a floor on the
ratio against any implementation of the reference design: an async engine (asyncpg) with a
pool of 10 connections (the service's default), PyJWT for the HS256 bearer token, the
specification's seven task fields only (the service answers with fifteen), and the two
statements a straightforward implementation sends (the page, then its count).

Environment: DATABASE_URL (postgresql+asyncpg://...), BETTER_AUTH_SECRET.
"""

import os
from datetime import datetime
from typing import Optional
from uuid import UUID

import jwt
from fastapi import Depends, FastAPI, Header, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import Field, SQLModel, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

SECRET = os.environ["BETTER_AUTH_SECRET"]
engine = create_async_engine(os.environ["DATABASE_URL"], pool_size=10, max_overflow=0)
app = FastAPI()


class Task(SQLModel, table=True):
    __tablename__ = "tasks"
    id: UUID = Field(primary_key=True)
    user_id: str
    title: str
    description: Optional[str] = None
    completed: bool
    created_at: datetime
    updated_at: datetime


class Page(BaseModel):
    items: list[Task]
    total: int
    page: int
    page_size: int


async def session():
    async with AsyncSession(engine) as s:
        yield s


def subject(authorization: str = Header()) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        raise HTTPException(401)
    try:
        return jwt.decode(token, SECRET, algorithms=["HS256"])["sub"]
    except jwt.PyJWTError:
        raise HTTPException(401)


@app.get("/api/{user_id}/tasks", response_model=Page)
async def list_tasks(
    user_id: str,
    page: int = Query(1, ge=1),
    page_size: int = Query(20, ge=1, le=100),
    sub: str = Depends(subject),
    s: AsyncSession = Depends(session),
):
    if sub != user_id:
        raise HTTPException(403)
    rows = await s.exec(
        select(Task)
        .where(Task.user_id == user_id)
        .order_by(Task.created_at.desc(), Task.id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    items = rows.all()
    count = select(func.count()).select_from(Task).where(Task.user_id == user_id)
    total = (await s.exec(count)).one()
    return Page(items=items, total=total, page=page, page_size=page_size)
